"""Hermes-style tool calls (Hermes 2/3, Qwen2.5, Qwen3, QwQ; the forced-call format too).

Format: each call is `<tool_call>` + a JSON object `{"name": ..., "arguments": {...}}` +
`</tool_call>`, newlines around the object optional; several calls may follow each other,
with text before and after. Visible text never contains the markup, and whitespace next to
it is dropped.

Leniency (the way small models get it wrong):
- A missing `</tool_call>` after a complete object is tolerated.
- Text between a complete object and `</tool_call>` (a stray `}`) is dropped; if no
  `</tool_call>` ever comes it is released as text at the end.
- A body that is not a JSON object becomes a call with `error` set and the body's raw text
  as its arguments, ending at `</tool_call>` (or at the end of the output).
"""
from __future__ import annotations

from .base import match_literal, partial_marker_len
from .toolbase import DONE, INVALID_JSON, MORE, ToolParser

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesToolParser(ToolParser):
    marker = OPEN
    call_states = ("call", "bad_call")
    end_reasons = {"bad_call": INVALID_JSON}

    def _enter_markup(self) -> None:
        self._begin_object("call")

    def _state_call(self) -> bool:
        status = self._scan_object()
        if status == MORE:
            return False
        self._state = "after_call" if status == DONE else "bad_call"
        return True

    def _state_bad_call(self) -> bool:
        at = self._buf.find(CLOSE)
        if at < 0:
            keep = partial_marker_len(self._buf, CLOSE)
            self._raw += self._buf[:len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep:]
            return False
        self._raw += self._buf[:at]
        self._buf = self._buf[at + len(CLOSE):]
        self._close_broken(INVALID_JSON)
        return self._to_text()

    def _state_after_call(self) -> bool:
        self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        closed = match_literal(self._buf, CLOSE)
        if closed is None:
            return False
        if closed:
            self._buf = self._buf[len(CLOSE):]
            return self._to_text()
        reopened = match_literal(self._buf, OPEN)
        if reopened is None:
            return False
        if reopened:  # the next call, close tag omitted
            return self._to_text()
        self._state = "junk"
        return True

    def _state_junk(self) -> bool:
        """After a complete call: text before `</tool_call>` is dropped; wait and see."""
        close, reopen = self._buf.find(CLOSE), self._buf.find(OPEN)
        if close >= 0 and (reopen < 0 or close < reopen):
            self._buf = self._buf[close + len(CLOSE):]
            return self._to_text()
        if reopen >= 0:
            self._buf = self._buf[reopen:]
            return self._to_text()
        return False

    def _at_end(self) -> None:
        if self._state == "junk":  # never closed: it was text after all
            self._lstrip = True
            self._state = "text"
        if self._state == "after_call":
            return
        super()._at_end()
