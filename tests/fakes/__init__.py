"""Test doubles of third-party packages. `fake_trtllm()` puts the fake `tensorrt_llm`
(tests/fakes/tensorrt_llm) on sys.path for the duration of a test or fixture, and
`subprocess_env()` does the same for a child process through PYTHONPATH. Nothing outside
tests/ imports this, so production code can never load the fake."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

FAKES_DIR = Path(__file__).resolve().parent


def _purge() -> None:
    for name in [n for n in sys.modules if n == "tensorrt_llm" or n.startswith("tensorrt_llm.")]:
        del sys.modules[name]


@contextlib.contextmanager
def fake_trtllm() -> Iterator[ModuleType]:
    """Import the fake as `tensorrt_llm`; on exit forget it, so a real one can load later."""
    _purge()
    sys.path.insert(0, str(FAKES_DIR))
    try:
        module = importlib.import_module("tensorrt_llm")
        assert getattr(module, "__fake__", False), "a real tensorrt_llm shadows the fake"
        module._fake.reset()
        yield module
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(FAKES_DIR))
        _purge()


@contextlib.contextmanager
def no_trtllm() -> Iterator[None]:
    """Make `import tensorrt_llm` fail, as on a host without it."""
    _purge()
    saved = sys.modules.get("tensorrt_llm")
    sys.modules["tensorrt_llm"] = None  # import raises ImportError
    try:
        yield
    finally:
        del sys.modules["tensorrt_llm"]
        if saved is not None:
            sys.modules["tensorrt_llm"] = saved


def subprocess_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """An environment whose Python finds the fake `tensorrt_llm` first."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAKES_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def write_checkpoint(directory: Path, max_position_embeddings: int = 512, engine: bool = False) -> Path:
    """A stand-in model directory: config.json only (the fake has no weights to load)."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict = {"model_type": "llama", "max_position_embeddings": max_position_embeddings}
    if engine:  # a TensorRT engine directory's config.json carries its build_config
        config = {"pretrained_config": {"architecture": "LlamaForCausalLM"},
                  "build_config": {"max_seq_len": max_position_embeddings, "max_batch_size": 8}}
    import json
    (directory / "config.json").write_text(json.dumps(config))
    return directory
