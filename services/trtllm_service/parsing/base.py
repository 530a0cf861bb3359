"""The parser protocol and the text-buffer helpers every streaming parser shares.

Protocol (what the serving core relies on):
- `feed(text) -> ParsedDelta` is called with each new piece of detokenized, stop-filtered
  text, split at arbitrary character boundaries; `finish() -> ParsedDelta` once at the end.
- Concatenating every delta's `text` gives the visible text, never containing markup; the
  same for `reasoning`. A parser holds back only text that could still turn out to be markup
  (a partial `<tool_call>`, and whitespace next to it) and releases it in `finish()`.
- `tool_calls` are `ToolCallPiece`s. A call's first piece carries `id` ("call_" + 24 hex
  digits) and `name`; later pieces only `arguments_delta`. Calls are announced in order
  (`index` 0, 1, ...) and a call is complete when the next one is announced or the stream
  ends. The concatenation of a call's `arguments_delta`s is its arguments as JSON text.
- `error`: at most one piece of a call has it set, to a human-readable reason the call is
  unusable (arguments not valid JSON or not an object, unknown function name, no name, the
  output ended inside the call). It is set on the call's first piece when the problem is
  known when the call is announced (unknown function name), otherwise on the last piece the
  call gets (possibly one with an empty `arguments_delta`). When `error` is set the
  arguments are whatever raw text the model produced for the call and may not be JSON.
- Markup opened with nothing after it when the output ends (`<tool_call>` cut off by
  max_tokens) is dropped: no call, no text.
- `saw_tool_calls` turns True with the first announced call (finish reason "tool_calls").
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ToolCallPiece:
    """A streamed piece of a tool call; `id`/`name` only on a call's first piece."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""
    #: Non-empty on one piece of a call the model got wrong (see the module docstring).
    error: str = ""


@dataclass
class ParsedDelta:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallPiece] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.reasoning or self.tool_calls)

    def extend(self, other: ParsedDelta) -> ParsedDelta:
        self.text += other.text
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)
        return self


class OutputParser:
    """Identity parser: all text is visible text."""

    #: What GetModelInfo reports: this parser extracts tool calls / separate reasoning.
    supports_tools: bool = False
    supports_reasoning: bool = False
    #: Set once the parser has seen at least one tool call (finish reason tool_calls).
    saw_tool_calls: bool = False

    def feed(self, text: str) -> ParsedDelta:
        return ParsedDelta(text=text)

    def finish(self) -> ParsedDelta:
        return ParsedDelta()

IdFactory = Callable[[], str]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def partial_marker_len(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def split_before_marker(buf: str, marker: str) -> tuple[str, str | None, str]:
    """Splits `buf` at the first `marker`: (text before, text after or None, held tail).

    Without a marker, the held tail is a partial marker at the end plus the whitespace
    before it: whitespace next to markup is formatting, dropped if the markup completes.
    With a marker, the whitespace right before it is dropped from the text before.
    """
    at = buf.find(marker)
    if at >= 0:
        return buf[:at].rstrip(), buf[at + len(marker):], ""
    cut = len(buf) - partial_marker_len(buf, marker)
    safe = buf[:cut].rstrip()
    return safe, None, buf[len(safe):]


def match_literal(buf: str, literal: str) -> bool | None:
    """True if `buf` starts with `literal`, None if it is still a prefix of it, else False."""
    if buf.startswith(literal):
        return True
    if literal.startswith(buf):
        return None
    return False
