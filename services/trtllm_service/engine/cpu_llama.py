"""llama.cpp through llama-cpp-python's ctypes bindings: one model, one context, one batch.

This is the only module that calls llama.cpp. It follows `llama.h` (vendored in
llama-cpp-python 0.3.36):
- `llama_model_load_from_file` + `llama_init_from_model` with a *unified* KV cache of
  `n_ctx` cells shared by `n_seq_max` sequences (`kv_unified`): any one sequence can use the
  whole cache, so a request may take the model's full context while others are short.
- `llama_decode` on a multi-sequence `llama_batch` whose arrays are numpy buffers owned here
  (filled with vectorised writes, not per-field ctypes stores). Return codes: 0 ok,
  1 no KV slot for the batch (memory restored: the caller frees cells and retries),
  2 aborted, -1 invalid batch, < -1 fatal.
- `llama_get_logits` gives the rows of the tokens marked for output, in batch order, as a
  float32 (rows, n_vocab) view valid until the next decode.
- `llama_memory_seq_rm/seq_cp` drop a sequence's cells past a position, or share a prefix
  of one sequence's cells with another (no copy in a unified cache).

ctypes releases the GIL for the duration of every foreign call (`ctypes.CDLL`), so a decode
on the engine thread never stalls the event loop (tests/integration/test_cpu_engine.py
checks it). llama.cpp's own log lines go to Python logging, warnings and errors only.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from .base import EngineUnavailable

log = logging.getLogger("trtllm_service.llama_cpp")

DECODE_OK, DECODE_NO_SLOT, DECODE_INVALID = 0, 1, -1
_FORWARDED = (3, 4)  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR (not CONT, which continues any level)
_log_callback = None  # the ctypes callback must outlive every llama.cpp call


def _import():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - the cpu extra installs it
        raise EngineUnavailable(f"the CPU engine needs llama-cpp-python (make venv builds it): {exc}") from None
    return llama_cpp


def _install_logging(lib) -> None:
    global _log_callback
    if _log_callback is not None:
        return

    def forward(level: int, text: bytes, _user) -> None:
        if level in _FORWARDED and text:
            log.warning("%s", text.decode("utf-8", "replace").rstrip())

    _log_callback = lib.llama_log_callback(forward)
    lib.llama_log_set(_log_callback, None)
    lib.llama_backend_init()


class LlamaRuntime:
    """A loaded GGUF model with one context; every method but `__init__` runs on one thread."""

    def __init__(self, path: Path, *, n_ctx: int, n_seq_max: int, n_batch: int, n_threads: int) -> None:
        lib = self._lib = _import()
        _install_logging(lib)
        self._model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
        if not self._model:
            raise EngineUnavailable(f"llama.cpp cannot load the model file {path} (not a GGUF it can read)")
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self._model))
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = True
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise EngineUnavailable(f"llama.cpp cannot create a context of {n_ctx} tokens for {path}")
        self.n_ctx = int(lib.llama_n_ctx(self._ctx))
        self.n_seq_max = int(lib.llama_n_seq_max(self._ctx))
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self._memory = lib.llama_get_memory(self._ctx)
        self._init_batch(n_batch)

    def _init_batch(self, capacity: int) -> None:
        lib = self._lib
        self.batch_capacity = capacity
        self._tokens = np.zeros(capacity, dtype=np.int32)
        self._pos = np.zeros(capacity, dtype=np.int32)
        self._n_seq = np.ones(capacity, dtype=np.int32)
        self._seq = np.zeros(capacity, dtype=np.int32)
        self._out = np.zeros(capacity, dtype=np.int8)
        int_p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq.ctypes.data
        self._seq_ptrs = (int_p * capacity)(*(ctypes.cast(base + 4 * i, int_p) for i in range(capacity)))
        self._batch = lib.llama_batch(
            n_tokens=0, token=self._tokens.ctypes.data_as(int_p), embd=None,
            pos=self._pos.ctypes.data_as(int_p), n_seq_id=self._n_seq.ctypes.data_as(int_p),
            seq_id=ctypes.cast(self._seq_ptrs, ctypes.POINTER(int_p)),
            logits=self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))

    # ------------------------------------------------------------------ vocabulary
    def eog_ids(self) -> frozenset[int]:
        """Every end-of-generation id the model declares (eos, eot, ...)."""
        is_eog = self._lib.llama_vocab_is_eog
        return frozenset(i for i in range(self.n_vocab) if is_eog(self._vocab, i))

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        raw = text.encode()
        buf = (ctypes.c_int32 * (len(raw) + 8))()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, len(buf), False, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[:max(n, 0)]

    # ------------------------------------------------------------------ decoding
    def decode(self, tokens: np.ndarray, positions: np.ndarray, seqs: np.ndarray, outputs: np.ndarray) -> int:
        """Decode one batch (arrays of equal length <= batch_capacity); see the return codes above."""
        n = len(tokens)
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._seq[:n] = seqs
        self._out[:n] = outputs
        self._batch.n_tokens = n
        return int(self._lib.llama_decode(self._ctx, self._batch))

    def logits(self, rows: int) -> np.ndarray:
        """The output rows of the last decode, (rows, n_vocab) float32, valid until the next one."""
        pointer = self._lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab))

    # ------------------------------------------------------------------ KV cache
    def seq_keep_prefix(self, seq: int, length: int) -> None:
        """Drop the cells of `seq` from position `length` on (0 drops them all)."""
        self._lib.llama_memory_seq_rm(self._memory, seq, length, -1)

    def seq_share_prefix(self, src: int, dst: int, length: int) -> None:
        """Make positions [0, length) of `src` also belong to `dst` (whose cells must be empty)."""
        self._lib.llama_memory_seq_cp(self._memory, src, dst, 0, length)

    def close(self) -> None:
        lib = self._lib
        if self._ctx:
            lib.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lib.llama_model_free(self._model)
            self._model = None
