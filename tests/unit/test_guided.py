"""Forced tool calls: the grammar compiles for the default model's tokenizer, xgrammar's
matcher accepts exactly the calls it should, and the tool parser turns them into calls."""
from __future__ import annotations

import json
import re

import pytest

xgr = pytest.importorskip("xgrammar")
# The imports below need xgrammar: they come after the skip (E402).
from tests.fixtures.grammar import accepts  # noqa: E402
from tests.unit.test_parsers import collect  # noqa: E402
from trtllm_service.guided import ToolConstraintError, tool_call_constraint  # noqa: E402
from trtllm_service.parsing import create_parser  # noqa: E402

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
TIME = {"type": "function", "name": "get_time", "parameters": json.dumps(
    {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]})}
PING = {"type": "function", "function": {"name": "ping"}}  # chat-completions shape, no parameters
TOOLS = [WEATHER, TIME, PING]

PARIS = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
UTC = '{"name": "get_time", "arguments": {"timezone": "UTC"}}'


def hermes(*calls: str) -> str:
    return "\n".join(f"<tool_call>\n{c}\n</tool_call>" for c in calls)


def test_forced_call_token_by_token_with_the_real_tokenizer(tokenizer, compiler):
    grammar = tool_call_constraint(TOOLS, "required", parallel=False).grammar
    matcher = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
    ids = tokenizer.encode(hermes(PARIS), add_special_tokens=False)
    assert all(matcher.accept_token(i) for i in ids)
    assert matcher.accept_token(tokenizer.eos_token_id) and matcher.is_terminated()


@pytest.mark.parametrize("text", [
    hermes('{"name": "get_weather", "arguments": {"city": "Paris"}}'),  # missing required unit
    hermes('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}'),  # not in enum
    hermes('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "x": 1}}'),  # extra key
    hermes('{"name": "send_email", "arguments": {}}'),  # not a tool
    hermes('{"arguments": {"timezone": "UTC"}, "name": "get_time"}'),  # name must come first
    "Sure! " + hermes(PARIS),  # text before the call
    PARIS,  # no markup
    hermes(PARIS, UTC),  # a second call without parallel
])
def test_invalid_calls_are_rejected(compiler, text):
    assert not accepts(compiler, tool_call_constraint(TOOLS, "required", parallel=False).grammar, text)


@pytest.mark.parametrize("text", [
    hermes(PARIS),
    hermes(UTC),
    hermes('{"name": "ping", "arguments": {"anything": [1, true]}}'),  # no parameters: any object
])
def test_valid_calls_are_accepted(compiler, text):
    assert accepts(compiler, tool_call_constraint(TOOLS, "required", parallel=False).grammar, text)


def test_parallel_allows_several_calls_up_to_max_calls(compiler):
    unbounded = tool_call_constraint(TOOLS, "required", parallel=True).grammar
    assert accepts(compiler, unbounded, hermes(PARIS))
    assert accepts(compiler, unbounded, hermes(PARIS, UTC, PARIS))
    bounded = tool_call_constraint(TOOLS, "required", parallel=True, max_calls=2).grammar
    assert accepts(compiler, bounded, hermes(PARIS, UTC))
    assert not accepts(compiler, bounded, hermes(PARIS, UTC, PARIS))


@pytest.mark.parametrize("choice", [{"type": "function", "name": "get_time"}, {"name": "get_time"},
                                    {"type": "function", "function": {"name": "get_time"}}])
def test_named_function_forces_exactly_that_one_call(compiler, choice):
    grammar = tool_call_constraint(TOOLS, choice, parallel=True).grammar
    assert accepts(compiler, grammar, hermes(UTC))
    assert not accepts(compiler, grammar, hermes(PARIS))
    assert not accepts(compiler, grammar, hermes(UTC, UTC))


FORMATTED = {
    "hermes": hermes(PARIS, UTC),
    "llama3_json": PARIS.replace('"arguments"', '"parameters"') + "; " + UTC.replace('"arguments"', '"parameters"'),
    "mistral": f"[TOOL_CALLS][{PARIS}, {UTC}]",
}


@pytest.mark.parametrize("fmt", sorted(FORMATTED))
def test_each_format_is_accepted_and_parsed_back_into_the_calls(compiler, fmt):
    text = FORMATTED[fmt]
    assert accepts(compiler, tool_call_constraint(TOOLS, "required", parallel=True, fmt=fmt).grammar, text)
    assert not accepts(compiler, tool_call_constraint(TOOLS, "required", parallel=False, fmt=fmt).grammar, text)
    result = collect(create_parser(fmt, tool_names=["get_weather", "get_time", "ping"]), list(text))
    assert result["text"] == ""
    assert [(c["name"], c["arguments"], c["error"]) for c in result["calls"]] == [
        ("get_weather", json.dumps({"city": "Paris", "unit": "celsius"}), ""),
        ("get_time", json.dumps({"timezone": "UTC"}), ""),
    ]


@pytest.mark.parametrize("tools, choice, kw, message", [
    (TOOLS, "required", {"fmt": "xml"}, "no forced-call format for tool parser 'xml'"),
    ([], "required", {}, "no tools were given"),
    (TOOLS, "auto", {}, "does not force a tool call"),
    (TOOLS, {"name": "nope"}, {}, "'nope', which is not among the tools"),
    ([{"name": "f", "parameters": "{not json"}], "required", {}, "tools[0].parameters is not valid JSON"),
    ([{"name": "f", "parameters": [1]}], "required", {}, "tools[0].parameters must be a JSON Schema object"),
    ([{"parameters": {}}], "required", {}, "tools[0].name must be a non-empty string"),
    ([{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}], "required", {},
     "cannot be used for constrained decoding"),
    (TOOLS, "required", {"max_calls": 0}, "max_calls must be at least 1"),
])
def test_bad_tools_or_choice_are_clear_errors(tools, choice, kw, message):
    with pytest.raises(ToolConstraintError, match=re.escape(message)):
        tool_call_constraint(tools, choice, parallel=kw.pop("parallel", False), **kw)


def test_xgrammar_errors_lose_their_cpp_locations():
    from trtllm_service.guided import grammar_error

    raw = RuntimeError("[12:01:02] /project/cpp/json_schema_converter.cc:4950: Unsupported JSON schema type 'x'")
    assert grammar_error(raw) == "Unsupported JSON schema type 'x'"
