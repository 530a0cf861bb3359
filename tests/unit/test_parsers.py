"""Output parsers: streaming protocol, hold-back, composition, registry, defaults.

`collect()` drives a parser over chunks and checks the piece protocol on the way (ids,
names only on first pieces, calls in order, at most one error per call, no markup in
text); the recorded-output tests (`test_parsers_recorded.py`) reuse it.
"""
from __future__ import annotations

import json
import re

import pytest

from trtllm_service.parsing import (
    PARSERS,
    OutputParser,
    ToolCallPiece,
    create_parser,
    default_parsers,
    prompt_opens_reasoning,
)

MARKUP = ("<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<think>", "</think>")
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def collect(parser: OutputParser, chunks: list[str], markup_is_text: bool = False) -> dict:
    """Feeds `chunks` then finishes; returns text, reasoning and calls, checking the protocol
    (and that no markup reaches the text, unless the case expects it to be text)."""
    result = {"text": "", "reasoning": "", "calls": []}
    deltas = [parser.feed(chunk) for chunk in chunks] + [parser.finish()]
    for delta in deltas:
        for marker in () if markup_is_text else MARKUP:
            assert marker not in delta.text, f"markup {marker!r} leaked into text {delta.text!r}"
        result["text"] += delta.text
        result["reasoning"] += delta.reasoning
        for piece in delta.tool_calls:
            _add_piece(result["calls"], piece)
    ids = [c.pop("id") for c in result["calls"]]
    assert len(set(ids)) == len(ids)
    assert parser.saw_tool_calls == bool(result["calls"])
    return result


def _add_piece(calls: list[dict], piece: ToolCallPiece) -> None:
    if piece.index == len(calls):  # a new call: announced with id and name
        assert CALL_ID.fullmatch(piece.id), piece
        calls.append({"id": piece.id, "name": piece.name, "arguments": "", "error": ""})
    else:  # a later piece of the newest call only: calls finish in order
        assert piece.index == len(calls) - 1, f"piece for call {piece.index} after call {len(calls) - 1} began"
        assert piece.id == "" and piece.name == "", piece
    call = calls[piece.index]
    call["arguments"] += piece.arguments_delta
    if piece.error:
        assert not call["error"], "two errors for one call"
        call["error"] = piece.error


def run(text: str, tool_parser: str | None = "hermes", reasoning_parser: str | None = None,
        chunks: list[str] | None = None, markup_is_text: bool = False, **kw) -> dict:
    parser = create_parser(tool_parser, reasoning_parser, **kw)
    return collect(parser, chunks if chunks is not None else [text], markup_is_text)


def weather_call(city: str = "Paris") -> str:
    return f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


# -- streaming and hold-back -----------------------------------------------------------

def test_text_without_markup_streams_at_once():
    parser = create_parser("hermes")
    assert parser.feed("Hello there").text == "Hello there"
    assert parser.feed(", friend.").text == ", friend."


def test_only_a_possible_marker_start_is_held_back_and_finish_releases_it():
    parser = create_parser("hermes")
    assert parser.feed("Use 1 < 2 or <tool").text == "Use 1 < 2 or"
    assert parser.feed("bar> here").text == " <toolbar> here"
    assert parser.feed(" and <tool_ca").text == " and"
    tail = parser.finish()
    assert tail.text == " <tool_ca" and tail.tool_calls == []


def test_arguments_stream_before_the_call_completes():
    parser = create_parser("hermes")
    first = parser.feed('Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par')
    assert first.text == "Sure."
    [piece] = first.tool_calls
    assert (piece.index, piece.name, piece.arguments_delta) == (0, "get_weather", '{"city": "Par')
    assert CALL_ID.fullmatch(piece.id)
    second = parser.feed('is"}}\n</tool_call>')
    assert [(p.id, p.name, p.arguments_delta) for p in second.tool_calls] == [("", "", 'is"}')]
    assert parser.finish().tool_calls == []


def test_call_is_not_announced_before_its_name_is_known():
    parser = create_parser("hermes")
    assert parser.feed('<tool_call>\n{"name": "get_wea').tool_calls == []
    assert parser.feed('ther"').tool_calls == []  # arguments not started yet
    [piece] = parser.feed(', "arguments": {').tool_calls
    assert (piece.name, piece.arguments_delta) == ("get_weather", "{")


def test_finish_closes_a_call_cut_short_with_an_error():
    parser = create_parser("hermes")
    parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    [piece] = parser.finish().tool_calls
    assert piece.index == 0 and "ended inside a tool call" in piece.error


def test_two_calls_with_text_before_and_after():
    text = "Checking both.\n" + weather_call("Paris") + "\n" + weather_call("Rome") + "\nBack soon."
    result = run(text, tool_names=["get_weather"])
    assert result["text"] == "Checking both.Back soon."
    assert [(c["name"], json.loads(c["arguments"])) for c in result["calls"]] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]


def test_arguments_are_the_models_json_text_and_parse():
    result = run('<tool_call>{"name": "f", "arguments": {"a": [1, {"b": "}]"}], "c": null}}</tool_call>')
    assert result["calls"][0]["arguments"] == '{"a": [1, {"b": "}]"}], "c": null}'


@pytest.mark.parametrize("body, arguments", [
    ('{"name": "f"}', "{}"),
    ('{"name": "f", "arguments": null}', "{}"),
    ('{"name": "f", "arguments": "{\\"a\\": 1}"}', '{"a": 1}'),
    ('{"arguments": {"a": 1}, "name": "f"}', '{"a": 1}'),
])
def test_other_argument_shapes_become_a_json_object(body, arguments):
    [call] = run(f"<tool_call>{body}</tool_call>")["calls"]
    assert (call["name"], call["arguments"], call["error"]) == ("f", arguments, "")


@pytest.mark.parametrize("body, error", [
    ('{"name": "f", "arguments": [1, 2]}', "not a JSON object"),
    ('{"name": "f", "arguments": "not json"}', "not valid JSON"),
    ('{"name": 7, "arguments": {}}', "not a non-empty string"),
    ('{"arguments": {"a": 1}}', "no function name"),
    ("{'name': 'f'}", "not valid JSON"),
])
def test_malformed_calls_become_errors_not_exceptions(body, error):
    [call] = run(f"<tool_call>{body}</tool_call>after")["calls"]
    assert error in call["error"]


def test_unknown_function_error_is_on_the_first_piece():
    parser = create_parser("hermes", tool_names=["get_weather"])
    [piece] = parser.feed('<tool_call>{"name": "rm_rf", "arguments": {').tool_calls
    assert piece.name == "rm_rf" and "unknown function 'rm_rf'" in piece.error


def test_empty_call_markup_at_the_end_is_dropped():
    result = run(weather_call() + "\n<tool_call>\n")
    assert len(result["calls"]) == 1 and result["text"] == ""


# -- reasoning and composition ---------------------------------------------------------

def test_reasoning_then_call_and_tool_markup_inside_reasoning_stays_reasoning():
    text = "<think>\nI could write <tool_call> here.\n</think>\n\n" + weather_call()
    result = run(text, reasoning_parser="think")
    assert result["reasoning"] == "I could write <tool_call> here."
    assert result["text"] == "" and result["calls"][0]["name"] == "get_weather"


def test_think_only_opens_at_the_start():
    result = run("The <think> tag is for reasoning.", None, "think", markup_is_text=True)
    assert result == {"text": "The <think> tag is for reasoning.", "reasoning": "", "calls": []}


def test_starts_in_reasoning_without_close_is_all_reasoning():
    result = run("still thinking when the tokens ran out", None, "think", starts_in_reasoning=True)
    assert result["reasoning"] == "still thinking when the tokens ran out" and result["text"] == ""


def test_unclosed_think_at_the_start_holds_only_the_tag_prefix():
    parser = create_parser(None, "think")
    assert parser.feed("  <thi").text == ""
    assert parser.finish().text == "  <thi"


def test_prompt_opens_reasoning():
    assert prompt_opens_reasoning("<|User|>hi<|Assistant|><think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")


@pytest.mark.parametrize("tool_parser, text", [
    ("hermes", weather_call()),
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {}}]'),
])
def test_tools_disabled_means_text_stays_text(tool_parser, text):
    result = run(text, tool_parser, tools_enabled=False, markup_is_text=True)
    assert result == {"text": text, "reasoning": "", "calls": []}


def test_tools_disabled_still_separates_reasoning():
    result = run("<think>hm</think>" + weather_call(), "hermes", "think", tools_enabled=False, markup_is_text=True)
    assert result == {"text": weather_call(), "reasoning": "hm", "calls": []}


# -- registry and defaults -------------------------------------------------------------

def test_registry_and_capabilities():
    assert {"passthrough", "hermes", "llama3_json", "mistral", "think"} <= set(PARSERS)
    for name in ("hermes", "llama3_json", "mistral"):
        assert PARSERS[name].supports_tools and not PARSERS[name].supports_reasoning
        assert isinstance(PARSERS[name](), OutputParser)
    assert PARSERS["think"].supports_reasoning and not PARSERS["think"].supports_tools
    both = create_parser("hermes", "think", tools_enabled=False)
    assert (both.supports_tools, both.supports_reasoning) == (True, True)
    plain = create_parser(None)
    assert (plain.supports_tools, plain.supports_reasoning) == (False, False)
    assert plain.feed("<tool_call>x").text == "<tool_call>x"


@pytest.mark.parametrize("args, message", [
    (("nope", None), "unknown tool parser 'nope'"),
    ((None, "hermes"), "unknown reasoning parser 'hermes'"),
])
def test_unknown_parser_names_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_parser(*args)


QWEN25 = ("{%- if tools %}...<tools>...</tools>\n\nFor each function call, return a json object ... "
          "within <tool_call></tool_call> XML tags")
QWEN3 = QWEN25 + "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
LLAMA31 = "{%- if builtin_tools is defined %}{{- '<|python_tag|>' + tool_call.name }}"
MISTRAL = "{%- if message.tool_calls %}{{- '[TOOL_CALLS][' }}"
R1 = "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
CHATML = ("{% for message in messages %}"
          "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")


@pytest.mark.parametrize("model_id, template, expected", [
    ("Qwen/Qwen2.5-7B-Instruct", QWEN25, ("hermes", None)),
    ("Qwen/Qwen3-8B", QWEN3, ("hermes", "think")),
    ("meta-llama/Llama-3.1-8B-Instruct", LLAMA31, ("llama3_json", None)),
    ("mistralai/Mistral-7B-Instruct-v0.3", MISTRAL, ("mistral", None)),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", R1, (None, "think")),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", CHATML, (None, None)),
    ("Qwen/QwQ-32B", "", ("hermes", "think")),
    ("meta-llama/Llama-3.2-3B-Instruct", "", ("llama3_json", None)),
    ("smollm2-135m-instruct", "", (None, None)),
    ("some/unknown-model", "", (None, None)),
])
def test_default_parsers(model_id, template, expected):
    assert default_parsers(model_id, template) == expected


def test_default_parsers_for_the_real_default_model(tokenizer):
    assert default_parsers("SmolLM2-135M-Instruct", tokenizer.chat_template) == (None, None)
