"""Incremental JSON scanning for tool-call bodies (RFC 8259 structure, not full validation).

`ValueScanner` follows one JSON value across chunks and says where it ends: a container
ends at its matching bracket, a string at its closing quote, a number or literal at the
first character that cannot belong to it. It tracks strings and escapes so that brackets
inside strings do not count, and reports `BAD` at a character that can never appear
outside a JSON string (`<`, `;`, ...), which is how a parser notices markup after
malformed JSON. Whether the text is valid JSON is checked with `json.loads` once the value
is complete.

`CallObjectScanner` follows the wrapper object of a call, `{"name": ..., "arguments": ...}`
(any key order, other keys skipped), and reports events while it scans:
`("key", key)`, `("name", raw JSON of the name value)`, `("args", raw chunk of the
arguments value)` as the arguments arrive, `("args_end", "")` when they are complete.
"""
from __future__ import annotations

import json
import re

MORE, DONE, BAD = "more", "done", "bad"

_STRING_SPECIAL = re.compile(r'["\\]')
# Outside strings: structural characters, and anything that is never JSON there.
_OUTSIDE = re.compile(r'[^\s\w.+\-,:]')
_SCALAR_START = set("-0123456789tfn")
_SCALAR_END = re.compile(r"[^\w.+\-]")
_WS = re.compile(r"\s*")


def _skip_ws(text: str, pos: int) -> int:
    """The position of the first non-whitespace character at or after `pos`."""
    match = _WS.match(text, pos)
    assert match is not None  # `\s*` matches the empty string
    return match.end()


class ValueScanner:
    """Follows one JSON value; `scan` returns (position reached, MORE | DONE | BAD)."""

    def __init__(self) -> None:
        self.kind: str | None = None  # "container" | "string" | "scalar"
        self.depth = 0
        self.in_string = False
        self.escape = False

    def scan(self, text: str, pos: int) -> tuple[int, str]:
        if self.kind is None:
            if pos >= len(text):
                return pos, MORE
            if not self._start(text[pos]):
                return pos, BAD
            pos += 1
        if self.kind == "scalar":
            m = _SCALAR_END.search(text, pos)
            return (len(text), MORE) if m is None else (m.start(), DONE)
        return self._scan_nested(text, pos)

    def _start(self, ch: str) -> bool:
        if ch in "{[":
            self.kind, self.depth = "container", 1
        elif ch == '"':
            self.kind, self.in_string = "string", True
        elif ch in _SCALAR_START:
            self.kind = "scalar"
        else:
            return False
        return True

    def _scan_nested(self, text: str, pos: int) -> tuple[int, str]:
        while pos < len(text):
            if self.in_string:
                if self.escape:
                    self.escape, pos = False, pos + 1
                    continue
                m = _STRING_SPECIAL.search(text, pos)
                if m is None:
                    return len(text), MORE
                pos = m.end()
                if m.group() == "\\":
                    self.escape = True
                else:
                    self.in_string = False
                    if self.kind == "string":
                        return pos, DONE
                continue
            m = _OUTSIDE.search(text, pos)
            if m is None:
                return len(text), MORE
            ch, pos = m.group(), m.end()
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return pos, DONE
            else:
                return m.start(), BAD
        return pos, MORE

    @property
    def complete_at_end(self) -> bool:
        """A number or literal is complete when the text ends right after it."""
        return self.kind == "scalar"


class CallObjectScanner:
    """Follows the wrapper object `{"name": ..., "<args key>": ...}`, emitting events."""

    def __init__(self, args_keys: tuple[str, ...] = ("arguments", "parameters")) -> None:
        self.args_keys = args_keys
        self.state = "open"
        self.key = ""
        self._key_raw = ""
        self._value = ValueScanner()  # replaced by each key's and value's own
        self._value_raw = ""
        self._args_seen = False

    def scan(self, text: str, pos: int, events: list[tuple[str, str]]) -> tuple[int, str]:
        """Consumes `text[pos:]`; returns (position reached, MORE | DONE | BAD)."""
        while True:
            if self.state in ("open", "key", "colon", "sep"):
                pos = _skip_ws(text, pos)
                if pos >= len(text):
                    return pos, MORE
                ok = getattr(self, "_" + self.state)(text[pos])
                if not ok:
                    return pos, BAD
                pos += 1
                if self.state == "done":
                    return pos, DONE
            elif self.state == "keystr":
                pos, status = self._scan_key(text, pos, events)
                if status != DONE:
                    return pos, status
            else:  # "value"
                pos, status = self._scan_value(text, pos, events)
                if status != DONE:
                    return pos, status

    def _open(self, ch: str) -> bool:
        self.state = "key"
        return ch == "{"

    def _key(self, ch: str) -> bool:
        if ch == "}":  # empty object, or lenient about a trailing comma
            self.state = "done"
            return True
        self._value, self._key_raw, self.state = ValueScanner(), "", "keystr"
        return ch == '"' and self._value._start(ch)

    def _colon(self, ch: str) -> bool:
        self._value, self._value_raw, self.state = ValueScanner(), "", "value"
        return ch == ":"

    def _sep(self, ch: str) -> bool:
        self.state = "key" if ch == "," else "done"
        return ch in ",}"

    def _scan_key(self, text: str, pos: int, events: list) -> tuple[int, str]:
        end, status = self._value.scan(text, pos)
        self._key_raw += text[pos:end]
        if status == DONE:
            try:
                self.key = json.loads('"' + self._key_raw)
            except ValueError:
                return end, BAD
            events.append(("key", self.key))
            self.state = "colon"
        return end, status

    def _scan_value(self, text: str, pos: int, events: list) -> tuple[int, str]:
        if self._value.kind is None:
            pos = _skip_ws(text, pos)
        end, status = self._value.scan(text, pos)
        chunk = text[pos:end]
        is_args = self.key in self.args_keys and not self._args_seen
        if is_args and chunk:
            events.append(("args", chunk))
        self._value_raw += chunk
        if status == DONE:
            if is_args:
                self._args_seen = True
                events.append(("args_end", ""))
            elif self.key == "name":
                events.append(("name", self._value_raw))
            self.state = "sep"
        return end, status
