"""The committed stubs must be exactly what scripts/gen_proto.sh generates from proto/."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs protoc in a child process

ROOT = Path(__file__).resolve().parents[2]
PKG = Path("trtllm_responses")


def test_committed_stubs_match_the_proto(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)], check=True, env=env)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / PKG).rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT / "services") for p in (ROOT / "services" / PKG).rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
    assert generated == committed, "stub file set differs: run scripts/gen_proto.sh"
    for rel in generated:
        assert filecmp.cmp(tmp_path / rel, ROOT / "services" / rel, shallow=False), \
            f"{rel} differs from the proto: run scripts/gen_proto.sh and commit"


def test_every_proto_field_has_a_doc_comment():
    lines = (ROOT / "proto/trtllm_responses/inference/v1/inference.proto").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_field = stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "//"))
        if is_field:
            assert lines[i - 1].strip().startswith("//"), f"line {i + 1} has no doc comment: {stripped}"
