"""The Hugging Face tokenizer a GGUF file describes, built without torch.

A GGUF has no `tokenizer.json`: its vocabulary, merges, special token ids and chat template
are metadata under llama.cpp's `tokenizer.*` keys (the GGUF format is specified in ggml's
`docs/gguf.md`: magic `GGUF`, a u32 version, u64 tensor and key counts, then each key as a
u64-length UTF-8 string, a u32 value type and the value; arrays are an element type, a u64
count and the elements; all little-endian).

`transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)` does the same, but its GGUF
reader imports torch at module level, which costs the service about 300 MB of RSS and seconds
of start-up for nothing the CPU engine uses. So this module reads the metadata itself (about
0.3 s for the default model) and hands it to transformers' own converter
(`convert_gguf_tokenizer`), which picks the tokenizer class, normalizer and pre-tokenizer.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_FIXED = {0: "B", 1: "b", 7: "?", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
#: Only the keys a tokenizer needs are decoded; the rest are skipped over.
_WANTED = ("tokenizer.", "general.architecture")


class _Cursor:
    """Reads GGUF values from a bytes buffer, moving forward."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.off = 0

    def fixed(self, kind: int, count: int = 1) -> Any:
        fmt = f"<{count}{_FIXED[kind]}"
        values = struct.unpack_from(fmt, self.data, self.off)
        self.off += struct.calcsize(fmt)
        return values[0] if count == 1 else list(values)

    def string(self) -> str:
        (size,) = struct.unpack_from("<Q", self.data, self.off)
        start = self.off + 8
        self.off = start + size
        return self.data[start:self.off].decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, count = struct.unpack_from("<IQ", self.data, self.off)
            self.off += 12
            if element == _STRING:
                return [self.string() for _ in range(count)]
            if element not in _FIXED:
                raise ValueError(f"unsupported GGUF array element type {element}")
            return self.fixed(element, count) if count else []
        if kind not in _FIXED:
            raise ValueError(f"unsupported GGUF value type {kind}")
        return self.fixed(kind)


def read_metadata(path: Path, prefixes: tuple[str, ...] = _WANTED) -> dict[str, Any]:
    """The metadata keys of `path` that start with one of `prefixes`."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, _tensors, n_keys = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    cursor = _Cursor(data)
    cursor.off = 24
    meta: dict[str, Any] = {}
    for _ in range(n_keys):
        key = cursor.string()
        (kind,) = struct.unpack_from("<I", data, cursor.off)
        cursor.off += 4
        value = cursor.value(kind)
        if key.startswith(prefixes):
            meta[key] = value
    return meta


def load_tokenizer(path: Path) -> Any:
    """A `PreTrainedTokenizerFast` equal to the one transformers builds for this GGUF."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS,
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    meta = read_metadata(path)
    groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer, config = groups["tokenizer"], groups["tokenizer_config"]
    if "tokens" not in tokenizer:
        raise ValueError(f"{path} has no tokenizer metadata (tokenizer.ggml.tokens)")
    if tokenizer.get("tokenizer_type") == "llama":
        config.setdefault("add_bos_token", True)  # as transformers does for sentencepiece files
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)
