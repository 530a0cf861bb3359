"""Per-request output plan: which parser reads the model's text, and whether decoding is
constrained so that a tool call must come out.

Parsers come from settings (`--tool-parser`, `--reasoning-parser`) or, when unset, from the
model family (`parsing.default_parsers`). A model whose chat template has no tool support
(SmolLM2) still serves tools: the templater describes them in the system prompt in Hermes
format, and the `hermes` parser reads the calls.

tool_choice:
- auto: the model decides; its calls are parsed.
- none: no tool parsing; text stays text.
- required / a named function: decoding is constrained with a grammar that only admits a
  call in the parser's format (`guided.tool_call_constraint`), so even a small model emits
  a valid call whose arguments match the tool's schema. This needs an engine with guided
  decoding; otherwise the request is refused with a clear error.
A request with its own `response_format` and a forced tool call is refused: one constraint
per request.

Custom tools (`Tool.custom`, called with `{"input": "<text>"}`): their grammar is compiled
for every request that offers them (an invalid one is INVALID_ARGUMENT naming
`CustomToolFormat.param`, e.g. `tools[3].format.definition`); a forced call matches it, and
in auto mode, when the engine has guided decoding and no response format is set, calls are
constrained once their opening marker is written (`guided.triggered_tool_constraint`;
hermes format only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .custom_grammar import CustomGrammarError, arguments_grammar
from .engine.base import Engine, GuidedDecoding, OutputSyntax
from .errors import InvalidRequest
from .guided import ToolConstraintError, tool_call_constraint, triggered_tool_constraint
from .parsing import OutputParser, create_parser, default_parsers, prompt_opens_reasoning
from .parsing.registry import TOOL_PARSERS

FALLBACK_TOOL_PARSER = "hermes"
_MODE = pb.ToolChoice


@dataclass
class OutputPlan:
    parser: OutputParser
    guided: GuidedDecoding | None
    keep_special_tokens: tuple[str, ...]
    syntax: OutputSyntax


class OutputPlanner:
    """Chooses parsers once per server and builds a plan per request."""

    def __init__(self, engine: Engine, tool_parser: str | None, reasoning_parser: str | None) -> None:
        template = str(getattr(engine.tokenizer, "chat_template", "") or "")
        if tool_parser is None and reasoning_parser is None:
            tool_parser, reasoning_parser = default_parsers(engine.model_id, template)
        self.native_tool_parser = tool_parser
        self.tool_parser = tool_parser or FALLBACK_TOOL_PARSER
        self.reasoning_parser = reasoning_parser
        self.engine = engine
        parser_cls = TOOL_PARSERS.get(self.tool_parser)
        self.keep_special = tuple(getattr(parser_cls, "special_tokens", ()))

    @property
    def supports_reasoning(self) -> bool:
        return self.reasoning_parser is not None

    def plan(self, request: pb.GenerateRequest, prompt_text: str | None) -> OutputPlan:
        chat = request.chat if request.WhichOneof("input") == "chat" else None
        tools_on = chat is not None and bool(chat.tools) and _mode(chat) != _MODE.MODE_NONE
        in_reasoning = bool(prompt_text and self.reasoning_parser and prompt_opens_reasoning(prompt_text))
        parser = create_parser(
            self.tool_parser if tools_on else None, self.reasoning_parser,
            tool_names=[t.name for t in chat.tools] if chat else None, tools_enabled=tools_on,
            starts_in_reasoning=in_reasoning)
        guided = self._constraint(request, chat) if tools_on and chat is not None else None
        offered = tuple((t.name, t.parameters_json) for t in chat.tools) if tools_on and chat is not None else ()
        syntax = OutputSyntax(tools=offered, tool_parser=self.tool_parser if tools_on else None,
                              reasoning_parser=self.reasoning_parser, starts_in_reasoning=in_reasoning)
        return OutputPlan(parser, guided, self.keep_special if tools_on else (), syntax)

    def _constraint(self, request: pb.GenerateRequest, chat: pb.Chat) -> GuidedDecoding | None:
        tools = _guided_tools(chat)
        forced = self._forced_call(request, chat, tools)
        if forced is not None or not any("arguments_grammar" in t for t in tools):
            return forced
        if not self.engine.supports_guided or _has_format(request):
            return None  # as for function tools in auto mode: the model's calls are parsed as written
        try:
            return triggered_tool_constraint(tools, self.tool_parser)
        except ToolConstraintError as exc:
            raise InvalidRequest(str(exc), "tools") from None

    def _forced_call(self, request: pb.GenerateRequest, chat: pb.Chat, tools: list[dict]) -> GuidedDecoding | None:
        choice = chat.tool_choice.WhichOneof("choice")
        if choice == "function_name":
            wanted: str | dict = {"name": chat.tool_choice.function_name}
        elif _mode(chat) == _MODE.MODE_REQUIRED:
            wanted = "required"
        else:
            return None
        if not self.engine.supports_guided:
            raise InvalidRequest(f"tool_choice {_describe(wanted)} needs constrained decoding, which the "
                                 f"{self.engine.name} engine does not support", "tool_choice")
        if _has_format(request):
            raise InvalidRequest("a forced tool call cannot be combined with a response format", "tool_choice")
        parallel = chat.parallel_tool_calls if chat.HasField("parallel_tool_calls") else True
        max_calls = chat.max_tool_calls if chat.HasField("max_tool_calls") else None
        try:
            return tool_call_constraint(tools, wanted, parallel, self.tool_parser, max_calls=max_calls)
        except ToolConstraintError as exc:
            raise InvalidRequest(str(exc), "tool_choice") from None


def _guided_tools(chat: pb.Chat) -> list[dict]:
    """The offered tools for the grammars: name, parameters and, for custom tools with a
    grammar, the grammar of their arguments (compiled here, so a bad one is refused)."""
    tools = []
    for tool in chat.tools:
        spec = {"name": tool.name, "parameters": tool.parameters_json}
        if tool.HasField("custom") and tool.custom.syntax not in ("", "text"):
            try:
                spec["arguments_grammar"] = arguments_grammar(tool.custom.syntax, tool.custom.definition)
            except CustomGrammarError as exc:
                raise InvalidRequest(f"custom tool {tool.name!r}: {exc}", tool.custom.param or "tools") from None
        tools.append(spec)
    return tools


def _has_format(request: pb.GenerateRequest) -> bool:
    return request.HasField("response_format") and bool(request.response_format.WhichOneof("format"))


def _mode(chat: pb.Chat) -> int:
    if chat.tool_choice.WhichOneof("choice") == "mode":
        return chat.tool_choice.mode
    return _MODE.MODE_AUTO


def _describe(wanted: str | dict) -> str:
    return json.dumps(wanted) if isinstance(wanted, dict) else repr(wanted)
