"""Llama 3.1 / 3.2 / 3.3 JSON tool calls.

Format: the assistant message is a JSON object `{"name": ..., "parameters": {...}}`
(`"arguments"` and an extra `"type": "function"` key are accepted too), optionally after
`<|python_tag|>`; several calls are separated by `;`. Only the message's start (or the
text right after `<|python_tag|>` or a `;` that follows a call) can begin a call.

A JSON answer is not always a call, so an object there is a *candidate* until it has a
string `"name"` and an arguments key (or, when the object ends, a name from the tool
list); a key outside name/parameters/arguments/type, or text that is not a JSON object,
turns the candidate back into visible text. Once committed, the arguments stream like the
other parsers', and a call that turns out malformed gets `error` set.
"""
from __future__ import annotations

import json

from .base import match_literal
from .toolbase import BAD, INVALID_JSON, MORE, ToolParser

PYTHON_TAG = "<|python_tag|>"
_KEYS = frozenset({"name", "parameters", "arguments", "type"})


class Llama3JsonToolParser(ToolParser):
    marker = PYTHON_TAG
    args_keys = ("parameters", "arguments")
    initial_state = "start"

    def _state_start(self) -> bool:
        """Where a call may begin: whitespace, then `<|python_tag|>` or `{`, else text."""
        body = self._buf.lstrip()
        if not body:
            return False
        tagged = match_literal(body, PYTHON_TAG)
        if tagged is None:
            return False
        if tagged:
            self._buf = body[len(PYTHON_TAG):]
            return True  # stay in "start": the object follows the tag
        if body[0] == "{":
            self._buf = body
            self._begin_candidate()
            return True
        self._state = "text"
        return True

    def _enter_markup(self) -> None:
        self._state = "start"

    def _begin_candidate(self) -> None:
        self._begin_object("candidate")
        self._queued: list[tuple[str, str]] = []
        self._committed = False
        self._name: str | None = None
        self._has_args = False

    def _state_candidate(self) -> bool:
        if self._committed:
            return self._state_committed()
        events: list[tuple[str, str]] = []
        pos, status = self._scanner.scan(self._buf, 0, events)
        self._raw += self._buf[:pos]
        self._buf = self._buf[pos:]
        for event in events:
            if not self._route(event):
                return self._reject()
        if status == MORE:
            return False
        if status == BAD and self._committed:
            self._close_broken(INVALID_JSON)
            return self._to_text()
        if status == BAD or not self._commit(at_end=True):
            return self._reject()
        self._add(self._open_call.close(True))
        self._state = "between"
        return True

    def _state_committed(self) -> bool:
        status = self._scan_object()
        if status == MORE:
            return False
        if status == BAD:
            self._close_broken(INVALID_JSON)
            return self._to_text()
        self._state = "between"
        return True

    def _route(self, event: tuple[str, str]) -> bool:
        """Queues an event of an uncommitted candidate; False if it cannot be a call."""
        if self._committed:
            self._add(self._open_call.event(*event))
            return True
        kind, value = event
        self._queued.append(event)
        if kind == "key":
            if value not in _KEYS:
                return False
            self._has_args = self._has_args or value in self.args_keys
        elif kind == "name":
            try:
                name = json.loads(value)
            except ValueError:
                return False
            if not isinstance(name, str):
                return False
            self._name = name
        self._commit(at_end=False)
        return True

    def _commit(self, at_end: bool) -> bool:
        if self._committed:
            return True
        known = self.tool_names is not None and self._name in self.tool_names
        if self._name is None or not (self._has_args or (at_end and known)):
            return False
        self._committed = True
        for event in self._queued:
            self._add(self._open_call.event(*event))
        return True

    def _reject(self) -> bool:
        """Not a call after all: what was scanned is visible text."""
        self._count -= 1  # the call was never announced; its index is free again
        self._buf = self._raw + self._buf
        self._call = None
        return self._to_text(lstrip=False)

    def _state_between(self) -> bool:
        self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        if self._buf[0] == ";":
            self._buf = self._buf[1:]
            self._state = "start"
            return True
        return self._to_text()

    def _at_end(self) -> None:
        if self._state == "candidate" and not self._committed:
            self._buf = self._raw + self._buf
            self._state = "text"
        elif self._state == "candidate":
            self._state = "call"
        if self._state == "start":
            self._state = "text"
        if self._state != "between":
            super()._at_end()
