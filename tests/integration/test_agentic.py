"""Function calling end to end, stream and non-stream, stored and stateless.

The peers' known bugs, each checked here: call markup in `output_text.delta` (vllm#36435),
history replay dropping `function_call` items (vllm#43244), unfinished streamed calls, and
event ids that differ from the final response. The "model" is scripted
(`agentic_stack.py`); tokenizer, parsers, templates, grammars, gRPC, gateway and store are
real. Every stream goes through `check_stream` (ids, order, deltas == done == final).
"""
from __future__ import annotations

import json

import jsonschema
import pytest_asyncio

from tests.fixtures.gateway import plain, raw_stream
from tests.integration.agentic_stack import CALL, FINAL_ANSWER, TIME_TOOL, WEATHER_TOOL, start_agentic_stack

TOOLS = [WEATHER_TOOL, TIME_TOOL]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_agentic_stack(tokenizer, tmp_path_factory)
    yield s
    await s.stop()


def _body(text: str, **extra) -> dict:
    return {"model": "default", "input": text, "tools": TOOLS, **extra}


def _calls(resp: dict) -> list[dict]:
    return [item for item in resp["output"] if item["type"] == "function_call"]


def _no_markup(events: list[dict]) -> None:
    for event in events:
        if event["type"] in ("response.output_text.delta", "response.output_text.done"):
            text = event.get("delta", event.get("text"))
            assert "<tool_call" not in text and "</tool_call" not in text, f"markup leaked: {text!r}"


async def test_text_then_call_streams_as_two_items_with_final_ids(stack):
    status, events, final = await raw_stream(stack.handle, _body("[[weather]] in Paris?"))
    assert status == 200 and final["status"] == "completed"
    _no_markup(events)
    message, call = final["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Let me check."
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_") and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_TOOL["parameters"])
    types = [e["type"] for e in events]
    assert types.index("response.output_text.done") < types.index("response.function_call_arguments.delta")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (done["item_id"], done["arguments"]) == (call["id"], call["arguments"])
    assert plain(await stack.handle.client.responses.retrieve(final["id"])) == final
    assert final["tools"][0] == WEATHER_TOOL and final["tool_choice"] == "auto"


async def test_non_stream_gives_the_same_items(stack):
    resp = await stack.handle.client.responses.create(**_body("[[weather]] in Paris?"))
    assert [item.type for item in resp.output] == ["message", "function_call"]
    assert resp.output_text == "Let me check."
    assert json.loads(resp.output[1].arguments) == {"city": "Paris"}


async def _agent_loop(stack, stream: bool) -> None:
    """call -> function_call_output -> final answer, via previous_response_id and statelessly."""
    async def create(body: dict) -> dict:
        if stream:
            status, _, final = await raw_stream(stack.handle, body)
            assert status == 200
            return final
        return plain(await stack.handle.client.responses.create(**body))

    first = await create(_body("[[call only]] weather in Paris?"))
    (call,) = _calls(first)
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21C"}
    chained = await create(_body("", input=[result], previous_response_id=first["id"]))
    assert chained["output"][0]["content"][0]["text"] == FINAL_ANSWER  # the model saw call AND result
    history = [{"role": "user", "content": "[[call only]] weather in Paris?"}, *first["output"], result]
    stateless = await create(_body("", input=history, store=False))
    assert stateless["output"][0]["content"][0]["text"] == FINAL_ANSWER
    assert stateless["usage"]["input_tokens"] == chained["usage"]["input_tokens"]
    items = await stack.handle.client.responses.input_items.list(chained["id"])
    assert [item.type for item in items.data] == ["function_call_output"]


async def test_agent_loop_non_stream(stack):
    await _agent_loop(stack, stream=False)


async def test_agent_loop_stream(stack):
    await _agent_loop(stack, stream=True)


async def test_history_replays_text_before_the_call_too(stack):
    first = await stack.handle.client.responses.create(**_body("[[weather]] in Paris?"))
    call = first.output[1]
    await stack.handle.client.responses.create(**_body("", previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}]))
    assert f"Let me check.\n{CALL}" in stack.prompts[-1]


async def test_parallel_calls_and_limits(stack):
    c = stack.handle.client
    both = await c.responses.create(**_body("[[two calls]]"))
    assert [(i.type, i.name) for i in both.output] == [("function_call", "get_weather"), ("function_call", "get_time")]
    assert len({i.id for i in both.output}) == 2 and len({i.call_id for i in both.output}) == 2
    single = await c.responses.create(**_body("[[two calls]]", parallel_tool_calls=False))
    assert [i.name for i in single.output] == ["get_weather"] and single.parallel_tool_calls is False
    capped = await c.responses.create(**_body("[[two calls]]", max_tool_calls=1))
    assert len(capped.output) == 1 and capped.max_tool_calls == 1
    status, events, final = await raw_stream(stack.handle, _body("[[two calls]]"))
    assert [i["name"] for i in _calls(final)] == ["get_weather", "get_time"]


async def test_malformed_and_unknown_calls_are_items_with_an_error(stack):
    for key, why in (("bad json", "JSON"), ("unknown fn", "launch_rockets")):
        status, events, final = await raw_stream(stack.handle, _body(f"[[{key}]]"))
        assert status == 200 and final["status"] == "completed"
        (call,) = _calls(final)
        assert call["status"] == "incomplete" and call["error"]["code"] == "invalid_tool_call"
        assert why in call["error"]["message"] or why in call["name"], call
        _no_markup(events)
    bad = await stack.handle.client.responses.create(**_body("[[bad json]]"))
    assert bad.output[0].arguments == '{"city": Paris}'  # the raw text is kept


async def test_tool_choice_none_hides_the_tools(stack):
    resp = await stack.handle.client.responses.create(**_body("[[plain]]", tool_choice="none"))
    assert "<tools>" not in stack.prompts[-1] and resp.tool_choice == "none"
    await stack.handle.client.responses.create(**_body("[[plain]]"))
    assert "<tools>" in stack.prompts[-1] and '"name": "get_weather"' in stack.prompts[-1]


async def test_required_and_named_choices_send_a_grammar_that_admits_the_call(stack):
    from xgrammar.testing import _is_grammar_accept_string

    c = stack.handle.client
    forced = await c.responses.create(**_body("[[call only]]", tool_choice="required"))
    grammar = stack.engine.guided[forced.id].grammar
    assert grammar and _is_grammar_accept_string(grammar, CALL)
    assert not _is_grammar_accept_string(grammar, "Sure, here you go.")
    assert forced.output[0].type == "function_call" and forced.tool_choice == "required"

    named = await c.responses.create(**_body("[[call only]]", tool_choice={"type": "function", "name": "get_weather"}))
    grammar = stack.engine.guided[named.id].grammar
    assert _is_grammar_accept_string(grammar, CALL)
    assert not _is_grammar_accept_string(grammar, '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert named.tool_choice.name == "get_weather"

    auto = await c.responses.create(**_body("[[call only]]"))
    assert stack.engine.guided[auto.id] is None  # auto: nothing forced


async def test_forcing_choice_refusals(stack):
    import openai

    c = stack.handle.client
    for body, param in ((_body("x", tool_choice={"type": "function", "name": "nope"}), "tool_choice"),
                        ({"model": "default", "input": "x", "tool_choice": "required"}, "tool_choice"),
                        (_body("x", tools=[{"type": "web_search"}], tool_choice={"type": "web_search_preview"}),
                         "tool_choice"),
                        (_body("x", tools=[{"type": "web_search"}], tool_choice="required"), "tool_choice")):
        try:
            await c.responses.create(**body)
        except openai.BadRequestError as exc:
            assert exc.body["param"] == param, exc.body
        else:
            raise AssertionError(f"{body} was accepted")


async def test_input_tokens_count_the_tools(stack):
    c = stack.handle.client
    with_tools = await c.responses.input_tokens.count(model="default", input="hi", tools=TOOLS)
    without = await c.responses.input_tokens.count(model="default", input="hi")
    resp = await c.responses.create(**_body("hi"))
    assert with_tools.input_tokens > without.input_tokens and with_tools.input_tokens == resp.usage.input_tokens
