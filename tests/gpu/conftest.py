"""GPU tier: the real TensorRT-LLM engine on a real GPU. Every test here is marked `gpu` and
skipped unless (1) the real `tensorrt_llm` imports (the fake from tests/fakes never counts),
(2) a GPU is visible, and (3) TRTLLM_TEST_MODEL names a local HF chat checkpoint directory,
e.g. Qwen2.5-0.5B-Instruct. Run inside the TensorRT-LLM release image:
    TRTLLM_TEST_MODEL=/models/qwen python3 -m pytest tests/gpu -m gpu
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FAKES = str(Path(__file__).resolve().parents[1] / "fakes")


def _real_trtllm_reason() -> str | None:
    """None when the real tensorrt_llm and a GPU are usable, else why not."""
    if FAKES in sys.path:
        sys.path.remove(FAKES)
    loaded = sys.modules.get("tensorrt_llm")
    if loaded is not None and getattr(loaded, "__fake__", False):
        for name in [n for n in sys.modules if n == "tensorrt_llm" or n.startswith("tensorrt_llm.")]:
            del sys.modules[name]
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "tensorrt_llm is not installed"
    if not _gpu_visible():
        return "no NVIDIA GPU is visible"
    model = os.environ.get("TRTLLM_TEST_MODEL")
    if not model or not (Path(model) / "config.json").is_file():
        return "TRTLLM_TEST_MODEL does not name a local HF checkpoint directory"
    try:
        module = importlib.import_module("tensorrt_llm")
    except Exception as exc:  # noqa: BLE001 - a broken install is a skip here; the smoke script fails on it
        return f"tensorrt_llm does not import: {exc}"
    if getattr(module, "__fake__", False):
        return "only the fake tensorrt_llm is importable"
    return None


def _gpu_visible() -> bool:
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if proc.returncode == 0 and "GPU" in proc.stdout:
            return True
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


_REASON: list[str | None] = []


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    if not _REASON:
        _REASON.append(_real_trtllm_reason())
    if _REASON[0] is not None:
        skip = pytest.mark.skip(reason=_REASON[0])
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dir() -> str:
    return os.environ["TRTLLM_TEST_MODEL"]
