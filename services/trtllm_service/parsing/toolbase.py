"""The state-machine skeleton shared by the tool-call parsers (protocol: see `base`).

A parser is a set of states, each a method `_state_<name>()` that consumes from the front
of `self._buf` and returns True if it made progress (run the next state), False if it
needs more text. `feed` appends and runs states until one waits; `finish` calls `_at_end`
so the current state can release what it held. Because every decision depends only on
the text seen so far, the result is the same however the text is split into chunks.

The "text" state is common: it emits visible text up to the parser's `marker` (the markup
that opens tool calls), holding back a partial marker and the whitespace before it, and
calls `_enter_markup()` when the marker is complete.
"""
from __future__ import annotations

from collections.abc import Iterable

from .base import IdFactory, OutputParser, ParsedDelta, ToolCallPiece, new_call_id, split_before_marker
from .calls import CallEmitter
from .jsonscan import BAD, DONE, MORE, CallObjectScanner

INVALID_JSON = "the tool call is not valid JSON"


class ToolParser(OutputParser):
    supports_tools = True
    #: The markup that opens tool calls inside visible text.
    marker: str = ""
    #: Special tokens this parser must see in the text: the detokenizer must not skip them.
    special_tokens: tuple[str, ...] = ()
    #: Keys of the wrapper object that hold the arguments, in order of preference.
    args_keys: tuple[str, ...] = ("arguments", "parameters")

    def __init__(self, tool_names: Iterable[str] | None = None, new_id: IdFactory = new_call_id) -> None:
        self.tool_names = frozenset(tool_names) if tool_names is not None else None
        self.new_id = new_id
        self.saw_tool_calls = False
        self._buf = ""
        self._state = self.initial_state
        self._lstrip = False  # drop whitespace at the start of the next visible text
        self._out = ParsedDelta()
        self._count = 0
        self._call: CallEmitter | None = None
        self._scanner = CallObjectScanner(self.args_keys)  # replaced by each call's own
        self._raw = ""

    initial_state = "text"

    def feed(self, text: str) -> ParsedDelta:
        self._out = ParsedDelta()
        self._buf += text
        while getattr(self, "_state_" + self._state)():
            pass
        return self._out

    def finish(self) -> ParsedDelta:
        self._out = ParsedDelta()
        self._at_end()
        self._buf = ""
        self._state = "text"
        return self._out

    # -- helpers -------------------------------------------------------------------------

    def _emit_text(self, text: str) -> None:
        if self._lstrip:
            text = text.lstrip()
            self._lstrip = not text
        self._out.text += text

    def _add(self, pieces: list[ToolCallPiece]) -> None:
        if pieces:
            self.saw_tool_calls = True
            self._out.tool_calls.extend(pieces)

    def _new_call(self, name: str | None = None) -> CallEmitter:
        self._call = CallEmitter(self._count, self.tool_names, self.new_id, name=name)
        self._count += 1
        return self._call

    @property
    def _open_call(self) -> CallEmitter:
        """The call being parsed: every call state has one (`_new_call` opened it)."""
        assert self._call is not None, f"no call open in state {self._state!r}"
        return self._call

    def _begin_object(self, state: str = "call") -> None:
        """Starts scanning a call's wrapper object `{"name": ..., "arguments": ...}`."""
        self._new_call()
        self._scanner = CallObjectScanner(self.args_keys)
        self._raw = ""
        self._state = state

    def _scan_object(self) -> str:
        """Feeds the buffer to the wrapper scanner and the call; returns the scan status.
        On DONE the call is closed; on BAD the caller decides how to recover."""
        events: list[tuple[str, str]] = []
        pos, status = self._scanner.scan(self._buf, 0, events)
        self._raw += self._buf[:pos]
        self._buf = self._buf[pos:]
        for kind, value in events:
            self._add(self._open_call.event(kind, value))
        if status == DONE:
            self._add(self._open_call.close(True))
        return status

    def _close_broken(self, reason: str) -> None:
        self._add(self._open_call.close(False, self._raw.strip(), reason))

    def _to_text(self, lstrip: bool = True) -> bool:
        self._state, self._lstrip = "text", lstrip
        return True

    # -- the text state ------------------------------------------------------------------

    def _state_text(self) -> bool:
        if self._lstrip:
            self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        before, after, held = split_before_marker(self._buf, self.marker)
        self._emit_text(before)
        if after is None:
            self._buf = held
            return False
        self._buf = after
        self._enter_markup()
        return True

    def _enter_markup(self) -> None:
        raise NotImplementedError

    def _at_end(self) -> None:
        """Default end: release held text; close an open call as cut short."""
        if self._state == "text":
            self._emit_text(self._buf)
        elif self._call is not None and self._state in self.call_states:
            self._raw += self._buf
            if not self._call.announced and not self._raw.strip() and self._call.name is None:
                self._count -= 1  # markup opened with nothing after it: no call at all
                return
            self._close_broken(self.end_reasons.get(self._state, "the output ended inside a tool call"))

    #: States in which a call is open (closed as broken by `_at_end`), and their reasons.
    call_states: tuple[str, ...] = ("call",)
    end_reasons: dict[str, str] = {}


__all__ = ["ToolParser", "INVALID_JSON", "BAD", "DONE", "MORE"]
