"""Constrained decoding that forces tool calls (tool_choice "required" or a named function).

`tool_call_constraint` returns a `GuidedDecoding` whose `grammar` is an xgrammar EBNF
grammar (the dialect TensorRT-LLM's and our CPU engine's xgrammar backends take, root rule
`root`). The grammar admits exactly the text of one call, or with `parallel` one or more
calls, in the chosen tool parser's format, so that parser turns the forced output into
calls:

| fmt                     | one call                                          | between calls |
|-------------------------|---------------------------------------------------|---------------|
| `hermes` (and no format) | `<tool_call>\n{"name": N, "arguments": A}\n</tool_call>` | `\n` |
| `llama3_json`           | `{"name": N, "parameters": A}`                     | `; `          |
| `mistral`               | `[TOOL_CALLS][{"name": N, "arguments": A}]`         | `, ` (in the array) |

N is one of the allowed function names and A matches that function's `parameters` JSON
Schema (a function without parameters takes any object). The JSON is compact, with
`json.dumps` separators (`", "`, `": "`), and "name" comes before the arguments so the
parser can stream them. A model without a native tool format (SmolLM2) uses `hermes`.
`parallel=False` forces exactly one call, `True` one or more (at most `max_calls`); a named
function (`{"name": ...}`) forces exactly one call of it, whatever `parallel` says.
Bad tools or choices raise `ToolConstraintError` (a ValueError) with a clear message.

Custom tools (`custom_grammar.py`) are functions whose arguments are `{"input": "<text>"}`;
a tool dict with `arguments_grammar` (the EBNF of those arguments under the tool's grammar)
is matched by that grammar instead of a JSON Schema, in forced calls and, through
`triggered_tool_constraint`, in calls the model chooses to make (`tool_choice` auto).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .engine.base import GuidedDecoding

_ROOT = "forced_tool_calls"  # our top rule; renamed to `root` when the grammar is printed


class ToolConstraintError(ValueError):
    """The tools or tool_choice cannot be turned into a grammar."""


@dataclass(frozen=True)
class CallFormat:
    open: str  # before the first call
    sep: str  # between two calls
    close: str  # after the last call
    args_key: str  # the key that holds the arguments object


FORMATS: dict[str, CallFormat] = {
    "hermes": CallFormat("<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>", "arguments"),
    "llama3_json": CallFormat("", "; ", "", "parameters"),
    "mistral": CallFormat("[TOOL_CALLS][", ", ", "]", "arguments"),
}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}


def tool_call_constraint(tools: list[dict], tool_choice: str | dict, parallel: bool,
                         fmt: str | None = None, *, max_calls: int | None = None) -> GuidedDecoding:
    """The grammar forcing `tool_choice` ("required", or `{"name": fn}` /
    `{"type": "function", "name": fn}`) over `tools` (each `{"name", "parameters"}`, flat
    Responses shape or nested under "function"; parameters a schema dict, a JSON string,
    or empty) in format `fmt` (a tool parser name; None means hermes). With `parallel`,
    `max_calls` (e.g. the request's max_tool_calls) bounds the number of calls: small
    models tend to repeat a call until max_tokens otherwise."""
    call_format = FORMATS.get(fmt or "hermes")
    if call_format is None:
        raise ToolConstraintError(f"no forced-call format for tool parser {fmt!r} (known: {', '.join(FORMATS)})")
    if max_calls is not None and max_calls < 1:
        raise ToolConstraintError("max_calls must be at least 1 when a tool call is forced")
    specs = [_tool_spec(i, tool) for i, tool in enumerate(tools)]
    chosen = _choose(specs, tool_choice)
    extra = (max_calls - 1 if max_calls is not None else -1) if parallel and tool_choice == "required" else 0
    grammars = _argument_grammars(tools)
    if any(name in grammars for name, _ in chosen):
        call = _call_union(chosen, grammars, call_format.args_key)
        return GuidedDecoding(grammar=_repeated(call, call_format, extra))
    schema = call_schema(chosen, call_format.args_key)
    return GuidedDecoding(grammar=tool_call_grammar(schema, call_format, extra))


def _argument_grammars(tools: list[dict]) -> dict[str, str]:
    return {t["name"]: t["arguments_grammar"] for t in tools if isinstance(t, dict) and t.get("arguments_grammar")}


def _call_union(tools: list[tuple[str, dict]], grammars: dict[str, str], args_key: str) -> str:
    """EBNF of one call `{"name": N, args_key: A}` of any of `tools`, A matching the tool's
    arguments grammar, else its parameters schema."""
    xgr = _xgrammar()
    calls = []
    for name, params in tools:
        head = xgr.Grammar.from_ebnf("root ::= " + _lit('{"name": ' + json.dumps(name) + f', "{args_key}": '))
        args = xgr.Grammar.from_ebnf(grammars[name]) if name in grammars else _schema_grammar(params)
        calls.append(xgr.Grammar.concat(head, args, xgr.Grammar.from_ebnf('root ::= "}"')))
    return str(xgr.Grammar.union(*calls) if len(calls) > 1 else calls[0])


def _schema_grammar(schema: dict[str, Any]):
    xgr = _xgrammar()
    try:
        return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/InvalidJSONError subclasses
        raise ToolConstraintError("the tools' parameters cannot be used for constrained decoding: "
                                  f"{grammar_error(exc)}") from None


#: Tool parsers whose calls open with a fixed marker (what triggers the constraint in auto mode).
TRIGGERS = {"hermes": "<tool_call>"}


def triggered_tool_constraint(tools: list[dict], fmt: str | None) -> GuidedDecoding | None:
    """Auto mode: free text, but a call, once its opening marker is written, must be a call of
    one of `tools` whose arguments match the tool's arguments grammar (custom tools) or are
    a JSON object (functions, as without the constraint). None for formats without a fixed
    opening marker (their calls are only constrained when forced)."""
    trigger = TRIGGERS.get(fmt or "hermes")
    if trigger is None:
        return None
    call_format = FORMATS[fmt or "hermes"]
    grammars = _argument_grammars(tools)
    tags = []
    for i, tool in enumerate(tools):
        name, _ = _tool_spec(i, tool)
        content = {"type": "grammar", "grammar": grammars[name]} if name in grammars else \
            {"type": "json_schema", "json_schema": {"type": "object"}}
        begin = call_format.open + '{"name": ' + json.dumps(name) + f', "{call_format.args_key}": '
        tags.append({"type": "tag", "begin": begin, "content": content, "end": "}" + call_format.close})
    spec = {"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": [trigger], "tags": tags}}
    try:
        grammar = _xgrammar().Grammar.from_structural_tag(json.dumps(spec))
    except Exception as exc:  # noqa: BLE001 - as above
        raise ToolConstraintError(f"the tools cannot be used for constrained decoding: {grammar_error(exc)}") from None
    return GuidedDecoding(grammar=str(grammar))


def call_schema(tools: list[tuple[str, dict]], args_key: str = "arguments") -> dict[str, Any]:
    """JSON Schema of one call object `{"name": N, args_key: A}` over (name, parameters)."""
    options = [{
        "type": "object",
        "properties": {"name": {"const": name}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    } for name, params in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_call_grammar(schema: dict[str, Any], call_format: CallFormat, extra_calls: int = 0) -> str:
    """EBNF text: the format's markup around one call matching `schema`, then up to
    `extra_calls` more (-1: any number)."""
    return _repeated(str(_schema_grammar(schema)), call_format, extra_calls)


def _repeated(call: str, call_format: CallFormat, extra_calls: int) -> str:
    """EBNF text: the format's markup around `call` (EBNF, root `root`), then up to
    `extra_calls` more (-1: any number)."""
    xgr = _xgrammar()
    more = {0: "", -1: "*"}.get(extra_calls, f"{{0, {extra_calls}}}")
    calls = f"root ({_lit(call_format.sep)} root){more}" if more else "root"
    parts = [p for p in (_lit(call_format.open), calls, _lit(call_format.close)) if p]
    ebnf = f"{call}\n{_ROOT} ::= {' '.join(parts)}\n"
    # Parsing with our own root renames the schema's `root` away; printing gives plain EBNF.
    return str(xgr.Grammar.from_ebnf(ebnf, root_rule_name=_ROOT))


def _lit(text: str) -> str:
    return json.dumps(text) if text else ""


def _tool_spec(index: int, tool: Any) -> tuple[str, dict]:
    if not isinstance(tool, dict):
        raise ToolConstraintError(f"tools[{index}] must be an object")
    fn = tool.get("function", tool) if isinstance(tool.get("function"), dict) else tool
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ToolConstraintError(f"tools[{index}].name must be a non-empty string")
    params = fn.get("parameters", fn.get("parameters_json"))
    if isinstance(params, str):
        try:
            params = json.loads(params) if params.strip() else None
        except ValueError as exc:
            raise ToolConstraintError(f"tools[{index}].parameters is not valid JSON: {exc}") from None
    if params is not None and not isinstance(params, dict):
        raise ToolConstraintError(f"tools[{index}].parameters must be a JSON Schema object")
    return name, params or _ANY_OBJECT


def _choose(specs: list[tuple[str, dict]], tool_choice: str | dict) -> list[tuple[str, dict]]:
    if not specs:
        raise ToolConstraintError("tool_choice forces a tool call but no tools were given")
    if tool_choice == "required":
        return specs
    name = _choice_name(tool_choice)
    if name is None:
        raise ToolConstraintError(f"tool_choice {tool_choice!r} does not force a tool call")
    chosen = [spec for spec in specs if spec[0] == name]
    if not chosen:
        raise ToolConstraintError(f"tool_choice names function {name!r}, which is not among the tools")
    return chosen[:1]


def _choice_name(tool_choice: Any) -> str | None:
    if not isinstance(tool_choice, dict):
        return None
    inner = tool_choice.get("function")
    name = inner.get("name") if isinstance(inner, dict) else tool_choice.get("name")
    return name if isinstance(name, str) and name else None


#: xgrammar prefixes its C++ errors with a timestamp and a source location
#: ("[12:00:00] /project/cpp/json_schema_converter.cc:4950: ..."): internals, not for clients.
_CPP_LOCATION = re.compile(r"\[[\d:.]+\]\s*|\S*/[\w./-]+\.(?:cc|cpp|h|hpp):\d+:\s*")


def grammar_error(exc: BaseException) -> str:
    """The client-facing text of an xgrammar error: its message without C++ locations."""
    return _CPP_LOCATION.sub("", str(exc)).strip() or type(exc).__name__


def _xgrammar():
    try:
        import xgrammar
    except ImportError:  # the engines that take grammars bring it; say so plainly
        raise ToolConstraintError("forced tool calls need the xgrammar package, which is not installed") from None
    return xgrammar
