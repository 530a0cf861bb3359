"""The service console script refuses a model the CPU engine cannot run: exit code 2, a clear message."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EXE = str(Path(sys.executable).with_name("trtllm-responses-service"))


def run_service(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "--port", "0", "--metrics-port", "-1", *args], capture_output=True, text=True,
                          timeout=120)


def test_a_file_llama_cpp_cannot_load_exits_2(tmp_path):
    bad = tmp_path / "broken.Q4_0.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    done = run_service("--model", str(bad))
    assert done.returncode == 2
    assert "llama.cpp cannot load the model file" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_hugging_face_directory_exits_2_with_the_conversion_hint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    done = run_service("--model", str(tmp_path))
    assert done.returncode == 2
    assert "convert_hf_to_gguf.py" in done.stderr
