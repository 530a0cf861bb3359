"""Incremental detokenization.

Decoding token by token breaks in two ways: a multi-byte UTF-8 character split over tokens
decodes to U+FFFD, and some tokenizers (SentencePiece's leading-space handling, byte
fallback) change how a token renders depending on its neighbours. So text is emitted only
when it is final: we decode a small window `ids[prefix:]` and compare with the decode of
`ids[prefix:read]`; the new suffix is emitted unless it ends in U+FFFD (an unfinished
character), in which case we wait for more tokens. Emitted text is never taken back, and
the concatenation of every `push()` plus `flush()` equals `decode(all ids)`.

The window is kept short (the prefix advances after every emission) so each step costs
O(a few tokens), not O(sequence length).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_REPLACEMENT = "\ufffd"
# Tokens of context kept before the read offset: enough for tokenizers whose rendering of
# a token depends on the previous one (SentencePiece spaces, byte-fallback runs).
_CONTEXT_TOKENS = 6


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True, keep_special: Sequence[str] = ()) -> None:
        """`keep_special` names special tokens that must stay in the text even though
        special tokens are skipped (a parser's markup, e.g. Mistral's `[TOOL_CALLS]`)."""
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._drop: frozenset[int] = frozenset()
        if skip_special_tokens and keep_special:
            keep = {tokenizer.convert_tokens_to_ids(t) for t in keep_special}
            self._drop = frozenset(set(tokenizer.all_special_ids) - keep)
            self._skip = False
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids before this are already emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)

    def push(self, token_ids: Sequence[int]) -> str:
        """Adds tokens; returns the text that became final (may be empty)."""
        self._ids.extend(i for i in token_ids if i not in self._drop)
        return self._advance(final=False)

    def flush(self) -> str:
        """Emits whatever is left, even an unfinished character, at end of stream."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read >= len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if not final and after.endswith(_REPLACEMENT):
            return ""
        if not after.startswith(before):
            # The tokenizer re-rendered earlier text (rare, e.g. cleanup rules); emit only
            # what follows the common prefix rather than taking back emitted text.
            common = 0
            while common < min(len(before), len(after)) and before[common] == after[common]:
                common += 1
            new_text = after[max(common, len(before)):]
        else:
            new_text = after[len(before):]
        self._read = len(self._ids)
        self._prefix = max(self._prefix, self._read - _CONTEXT_TOKENS)
        return new_text
