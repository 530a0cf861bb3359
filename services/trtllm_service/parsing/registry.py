"""Parser registries, per-request composition, and the default parsers of a model family.

A request's parser is a reasoning parser followed by a tool-call parser: the reasoning
parser splits reasoning from the rest, and only that rest goes through the tool parser
(so tool markup inside reasoning stays reasoning). With tools disabled for the request
(no tools, or tool_choice "none") text stays text.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from .base import OutputParser, ParsedDelta
from .hermes import HermesToolParser
from .llama3 import Llama3JsonToolParser
from .mistral import MistralToolParser
from .reasoning import ThinkReasoningParser
from .toolbase import ToolParser

TOOL_PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesToolParser,
    "llama3_json": Llama3JsonToolParser,
    "mistral": MistralToolParser,
}
REASONING_PARSERS: dict[str, type[OutputParser]] = {"think": ThinkReasoningParser}
#: Every parser by name; each factory can be called without arguments.
PARSERS: dict[str, Callable[[], OutputParser]] = {
    "passthrough": OutputParser, **TOOL_PARSERS, **REASONING_PARSERS,
}

# Markers in a chat template that identify the family's formats (first match wins).
_TOOL_MARKERS = (("<tool_call>", "hermes"), ("<|python_tag|>", "llama3_json"), ("[TOOL_CALLS]", "mistral"))
_REASONING_MARKERS = (("<think>", "think"), ("</think>", "think"))
# Used only when no chat template is known: substrings of the lower-cased model id.
_TOOL_IDS = (("smollm2", None), ("qwen", "hermes"), ("hermes", "hermes"), ("llama-3", "llama3_json"),
             ("llama3", "llama3_json"), ("mistral", "mistral"), ("mixtral", "mistral"))
_REASONING_IDS = (("smollm2", None), ("deepseek-r1", "think"), ("qwq", "think"), ("qwen3", "think"))


class ComposedParser(OutputParser):
    """Reasoning parser, then tool-call parser, either optional."""

    def __init__(self, reasoning: OutputParser | None, tools: OutputParser | None,
                 supports_tools: bool = False, supports_reasoning: bool = False) -> None:
        self.reasoning, self.tools = reasoning, tools
        self.supports_tools, self.supports_reasoning = supports_tools, supports_reasoning

    @property
    def saw_tool_calls(self) -> bool:  # type: ignore[override]  # read-only view of the base's plain attribute
        return self.tools is not None and self.tools.saw_tool_calls

    def feed(self, text: str) -> ParsedDelta:
        first = self.reasoning.feed(text) if self.reasoning else ParsedDelta(text=text)
        return self._tools(first, lambda tools, rest: tools.feed(rest))

    def finish(self) -> ParsedDelta:
        first = self.reasoning.finish() if self.reasoning else ParsedDelta()
        return self._tools(first, lambda tools, rest: tools.feed(rest).extend(tools.finish()), always=True)

    def _tools(self, first: ParsedDelta, run: Callable[[OutputParser, str], ParsedDelta],
               always: bool = False) -> ParsedDelta:
        if self.tools is None or not (first.text or always):
            return first
        second = run(self.tools, first.text)
        return ParsedDelta(text=second.text, reasoning=first.reasoning, tool_calls=second.tool_calls)


def _lookup(registry: dict, name: str | None, kind: str) -> type | None:
    if name in (None, "", "passthrough", "none"):
        return None
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} parser {name!r} (known: {known})")
    return registry[name]


def create_parser(tool_parser: str | None = None, reasoning_parser: str | None = None, *,
                  tool_names: Iterable[str] | None = None, tools_enabled: bool = True,
                  starts_in_reasoning: bool = False) -> OutputParser:
    """One request's parser. `tool_names`: the request's functions (others are errors);
    `tools_enabled=False`: no tool parsing at all; `starts_in_reasoning`: the prompt opened
    the reasoning block (see `prompt_opens_reasoning`). Unknown names raise ValueError."""
    tool_cls = _lookup(TOOL_PARSERS, tool_parser, "tool")
    reasoning_cls = _lookup(REASONING_PARSERS, reasoning_parser, "reasoning")
    if tool_cls is None and reasoning_cls is None:
        return OutputParser()
    tools = tool_cls(tool_names) if tool_cls is not None and tools_enabled else None
    reasoning = reasoning_cls(starts_in_reasoning) if reasoning_cls is not None else None
    return ComposedParser(reasoning, tools, supports_tools=tool_cls is not None,
                          supports_reasoning=reasoning_cls is not None)


def default_parsers(model_id: str, chat_template: str) -> tuple[str | None, str | None]:
    """(tool parser, reasoning parser) for a model: from markers in its chat template, or
    from its id when there is no template. A family without a tool format gets None
    (SmolLM2: tool calls are forced by grammar instead, see `guided.py`)."""
    if chat_template:
        return _first(_TOOL_MARKERS, chat_template), _first(_REASONING_MARKERS, chat_template)
    model = model_id.lower()
    return _first(_TOOL_IDS, model), _first(_REASONING_IDS, model)


def _first(table: tuple[tuple[str, str | None], ...], haystack: str) -> str | None:
    return next((name for needle, name in table if needle in haystack), None)
