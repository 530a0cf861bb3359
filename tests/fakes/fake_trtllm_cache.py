"""Hugging Face tokenizers the fake tensorrt_llm loaded, kept for the whole process.

A top-level module beside the fake package, not inside it: `fake_trtllm()` forgets every
`tensorrt_llm.*` module when a test ends (so a real one can load later), and a cache inside
the package would go with them, making every test that starts an engine load the GGUF
tokenizer again (~4 s each).
"""
from __future__ import annotations

import threading
from typing import Any

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


def tokenizer(source: str, **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained(source, **kwargs)`, loaded once per process."""
    from transformers import AutoTokenizer

    key = f"{source}:{sorted(kwargs.items())}"
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = AutoTokenizer.from_pretrained(source, **kwargs)
        return _CACHE[key]
