"""Output parsing: where model text becomes visible text, reasoning and tool calls.

The serving core pushes every detokenized, stop-filtered text delta through one
`OutputParser` per request and sends what comes out. A parser must be incremental: it may
hold back text that could still turn out to be markup (`<think>`, `<tool_call>`), and must
release everything in `finish()`. Parsers are chosen by name from `PARSERS` (the model
family's reasoning and tool-call formats); `PassthroughParser` is the default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class ToolCallPiece:
    """A streamed piece of a tool call; `id`/`name` only on a call's first piece."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass
class ParsedDelta:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallPiece] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.reasoning or self.tool_calls)


class OutputParser:
    """Identity parser: all text is visible text."""

    #: Set once the parser has seen at least one tool call (finish reason tool_calls).
    saw_tool_calls: bool = False

    def feed(self, text: str) -> ParsedDelta:
        return ParsedDelta(text=text)

    def finish(self) -> ParsedDelta:
        return ParsedDelta()


PassthroughParser = OutputParser

# name -> factory; later parsers (hermes, llama3_json, mistral, think) register here.
PARSERS: dict[str, Callable[[], OutputParser]] = {"passthrough": OutputParser}


def create_parser(name: str | None) -> OutputParser:
    return PARSERS[name or "passthrough"]()
