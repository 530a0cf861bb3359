"""A FAKE `tensorrt_llm` for tests that run without a GPU. Never installed, never shipped.

It implements only the part of TensorRT-LLM's LLM API (1.2.x line) that
`trtllm_service.engine.trtllm` uses, with the upstream names, signatures and defaults
(checked against `tests/fakes/manifest.json` by `tests/unit/test_trtllm_fake_manifest.py`).
Behind the API it runs a deterministic scheduler thread instead of a GPU model and uses a
real Hugging Face tokenizer (the default SmolLM2 GGUF's), so token ids, chat templates and
detokenisation are real.

Tests opt in by putting `tests/fakes` on `sys.path` (or PYTHONPATH for a subprocess);
nothing in `services/` or `gateway/` can reach it otherwise. `__fake__` lets a test tell
it from the real package. Test-only knobs live in `tensorrt_llm._fake`, which has no
upstream counterpart.

Upstream mirrored: tensorrt_llm/__init__.py (exports LLM, SamplingParams, __version__).
"""
from .llmapi import LLM
from .sampling_params import SamplingParams
from .version import __version__

__fake__ = True

__all__ = ["LLM", "SamplingParams", "__version__"]
