"""Grammar-constrained decoding for the CPU engine, with xgrammar.

One `GuidedCompiler` per engine wraps xgrammar's `TokenizerInfo` (built from the served
tokenizer, padded to the model's logits width) and `GrammarCompiler` (which caches compiled
grammars). For each constrained request, `processor(guided)` returns a `GrammarProcessor`:
a per-request row processor that `cpu_sampling.RequestSampler` calls once per decode step
with the tokens generated so far and that request's logits row (a numpy float32 array).
Protocol per step:
  1. feed the matcher every token generated since the last step (`accept_token`);
  2. fill the allowed-token bitmask (a numpy int32 array, handed to xgrammar over DLPack:
     bit j of word i allows token 32*i + j) and set every disallowed logit to -inf.
When the grammar is complete the mask admits only end-of-sequence, so the request stops
with "stop". Compilation can take tens of milliseconds: callers run `processor()` off the
event loop. Masking runs on the decode thread. xgrammar imports torch, so the first guided
request loads it (lazily: plain requests never do).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..guided import grammar_error
from .base import EngineRejected, GuidedDecoding


class GrammarProcessor:
    """Masks one request's logits to the tokens its grammar allows next."""

    def __init__(self, xgr: Any, compiled: Any, vocab_size: int) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = np.full((1, (vocab_size + 31) // 32), -1, dtype=np.int32)
        self._fed = 0

    def __call__(self, generated: Sequence[int], scores: np.ndarray) -> np.ndarray:
        for token in generated[self._fed:]:
            # A token the grammar rejects can only come from a processor after this one;
            # the matcher then stays where it was and keeps constraining.
            self._matcher.accept_token(int(token))
        self._fed = len(generated)
        if self._matcher.is_terminated():
            return scores
        if not self._matcher.fill_next_token_bitmask(self._bitmask):
            return scores  # everything is allowed
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: scores.size].astype(bool)
        scores[~allowed] = -np.inf
        return scores


class GuidedCompiler:
    """Compiles `GuidedDecoding` constraints against one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr  # imported lazily: only constrained requests need it

        self._xgr = xgr
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)

    def _compile(self, guided: GuidedDecoding) -> Any:
        c = self._compiler
        if guided.grammar is not None:
            return c.compile_grammar(guided.grammar)
        if guided.json_schema is not None:
            return c.compile_json_schema(guided.json_schema, any_whitespace=False)
        if guided.regex is not None:
            return c.compile_regex(guided.regex)
        if guided.json_object:
            # The builtin JSON grammar admits any value; OpenAI's json_object means an object.
            return c.compile_json_schema('{"type": "object"}', any_whitespace=False)
        raise EngineRejected("empty structured-output constraint")

    def processor(self, guided: GuidedDecoding) -> GrammarProcessor:
        try:
            compiled = self._compile(guided)
        except EngineRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - xgrammar reports bad schemas/grammars as RuntimeError
            what = "JSON schema" if guided.json_schema else "regex" if guided.regex else "grammar"
            raise EngineRejected(f"the {what} cannot be compiled for constrained decoding: {grammar_error(exc)}",
                                 "response_format") from None
        return GrammarProcessor(self._xgr, compiled, self.vocab_size)

