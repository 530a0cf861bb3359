"""Mistral tool calls (Mistral 7B v0.3, Mixtral, Nemo, Small, Large; old and new tokenizers).

Formats, after the special token `[TOOL_CALLS]`:
- v3-style: a JSON array of call objects, `[{"name": ..., "arguments": {...}}, ...]`
  (a lone object without the array is accepted too);
- v11+ style: `name[ARGS]{...}`, repeated as `[TOOL_CALLS]name2[ARGS]{...}` for several
  calls, with an optional `[CALL_ID]id` between the name and `[ARGS]` (its id is ignored:
  ids are ours).
`[TOOL_CALLS]`, `[ARGS]` and `[CALL_ID]` are special tokens, so the detokenizer must keep
them in the text (`special_tokens`). Text after `[TOOL_CALLS]` that is neither an array
nor a function name is released as visible text without the marker.
"""
from __future__ import annotations

import re

from .base import partial_marker_len
from .jsonscan import ValueScanner
from .toolbase import BAD, INVALID_JSON, MORE, ToolParser

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_NAME_SO_FAR = re.compile(r"[\w.\-]*(\[[\w\[\]]*)?")
_NAME_DONE = re.compile(r"([\w.\-]+)(?:\[CALL_ID\]\w*)?")


class MistralToolParser(ToolParser):
    marker = TOOL_CALLS
    special_tokens = (TOOL_CALLS, ARGS, CALL_ID)
    call_states = ("object", "args")

    def _enter_markup(self) -> None:
        self._state = "after_tag"

    def _state_after_tag(self) -> bool:
        self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        first = self._buf[0]
        if first == "[":
            self._buf = self._buf[1:]
            self._state = "array_item"
        elif first == "{":
            self._in_array = False
            self._begin_object("object")
        else:
            self._name_raw = ""
            self._state = "name"
        return True

    def _state_array_item(self) -> bool:
        self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        if self._buf[0] == "{":
            self._in_array = True
            self._begin_object("object")
            return True
        if self._buf[0] == "]":  # an empty list of calls
            self._buf = self._buf[1:]
        return self._to_text()

    def _state_object(self) -> bool:
        status = self._scan_object()
        if status == MORE:
            return False
        if status == BAD:
            self._close_broken(INVALID_JSON)
            return self._to_text()
        if self._in_array:
            self._state = "array_sep"
            return True
        return self._to_text()

    def _state_array_sep(self) -> bool:
        self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        if self._buf[0] == ",":
            self._buf = self._buf[1:]
            self._state = "array_item"
            return True
        if self._buf[0] == "]":
            self._buf = self._buf[1:]
        return self._to_text()

    def _state_name(self) -> bool:
        """`name[ARGS]`: collect the name; if it is not one, the text is visible text."""
        at = self._buf.find(ARGS)
        cut = at if at >= 0 else len(self._buf) - partial_marker_len(self._buf, ARGS)
        self._name_raw += self._buf[:cut]
        self._buf = self._buf[cut:]
        if at < 0:
            if _NAME_SO_FAR.fullmatch(self._name_raw):
                return False
            return self._not_a_name()
        done = _NAME_DONE.fullmatch(self._name_raw)
        if done is None:
            return self._not_a_name()
        self._buf = self._buf[len(ARGS):]
        self._new_call(done.group(1))
        self._value = ValueScanner()
        self._raw = ""
        self._state = "args"
        return True

    def _not_a_name(self) -> bool:
        self._buf = self._name_raw + self._buf
        return self._to_text()

    def _state_args(self) -> bool:
        if self._value.kind is None:
            self._buf = self._buf.lstrip()
        pos, status = self._value.scan(self._buf, 0)
        chunk, self._buf = self._buf[:pos], self._buf[pos:]
        self._raw += chunk
        if chunk:
            self._add(self._open_call.event("args", chunk))
        if status == MORE:
            return False
        if status == BAD:
            self._close_broken(INVALID_JSON)
        else:
            self._add(self._open_call.close(True))
        return self._to_text()

    def _at_end(self) -> None:
        if self._state == "args" and self._value.complete_at_end:
            self._add(self._open_call.close(True))  # a bare number or literal: the JSON check decides
            return
        if self._state == "name":
            name = _NAME_DONE.fullmatch(self._name_raw)  # the buffer holds at most a partial [ARGS]
            if name is None:
                self._not_a_name()
            else:  # cut short between the name and its arguments
                self._new_call(name.group(1))
                self._raw, self._buf, self._state = "", "", "args"
        elif self._state in ("after_tag", "array_item", "array_sep"):
            self._state, self._buf = "text", ""
        super()._at_end()
