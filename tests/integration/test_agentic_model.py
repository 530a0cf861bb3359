"""The agentic paths with the real default model (SmolLM2-135M on the CPU engine).

Through the openai SDK and the session's real gateway: `tool_choice: "required"` yields a
valid `function_call` whose arguments validate against the tool's schema; a whole agent
loop (forced call, `function_call_output`, final answer) via `previous_response_id` and
statelessly, streamed events equal to the final items; `json_schema` output validates;
logprobs come with the right count; auto tools never leak call markup into text.

Forced calls and structured output need the CPU engine's guided decoding (xgrammar):
those tests skip while `CpuEngine.supports_guided` is False. Outputs are short
(`max_output_tokens` small, greedy) to keep the CPU cost down.
"""
from __future__ import annotations

import json

import jsonschema
import pytest

from tests.fixtures.gateway import plain, raw_stream
from tests.integration.agentic_stack import PERSON_SCHEMA, WEATHER_TOOL, cpu_guided

GREEDY = {"model": "default", "temperature": 0, "max_output_tokens": 48}
needs_guided = pytest.mark.skipif(not cpu_guided(), reason="the CPU engine has no guided decoding yet")


def _no_markup(events: list[dict]) -> None:
    for e in events:
        if e["type"] == "response.output_text.delta":
            assert "<tool_call" not in e["delta"] and "</tool_call" not in e["delta"], e["delta"]


async def test_logprobs_with_the_right_count(gateway):
    resp = await gateway.client.responses.create(
        **{**GREEDY, "max_output_tokens": 16}, input="Write a long story about a dragon.", top_logprobs=2,
        include=["message.output_text.logprobs"])
    assert resp.status == "incomplete" and resp.usage.output_tokens == 16  # cut by length: no EOS token
    logprobs = resp.output[0].content[0].logprobs
    assert len(logprobs) == 16
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in logprobs)
    assert all(lp.top_logprobs[0].logprob >= lp.top_logprobs[1].logprob for lp in logprobs)


async def test_auto_tools_never_leak_markup(gateway):
    status, events, final = await raw_stream(gateway, {**GREEDY, "max_output_tokens": 16, "tools": [WEATHER_TOOL],
                                                       "input": "What is the weather in Paris?"})
    assert status == 200 and final["status"] in ("completed", "incomplete")
    _no_markup(events)
    for item in final["output"]:
        if item["type"] == "function_call" and item["status"] == "completed":
            jsonschema.validate(json.loads(item["arguments"]), WEATHER_TOOL["parameters"])


@needs_guided
async def test_required_tool_choice_gives_a_valid_call(gateway):
    # one call: with parallel calls allowed, a small model may repeat calls until max tokens
    resp = await gateway.client.responses.create(**GREEDY, input="What is the weather in Paris?",
                                                 tools=[WEATHER_TOOL], tool_choice="required",
                                                 parallel_tool_calls=False)
    assert resp.status == "completed"
    (call,) = resp.output
    assert call.type == "function_call" and call.status == "completed" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["parameters"])
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")


@needs_guided
async def test_agent_loop_with_the_real_model(gateway):
    c = gateway.client
    ask = {**GREEDY, "tools": [WEATHER_TOOL], "parallel_tool_calls": False}
    first = await c.responses.create(**ask, input="What is the weather in Paris?", tool_choice="required")
    (call,) = [item for item in first.output if item.type == "function_call"]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}
    status, events, chained = await raw_stream(gateway, {**ask, "input": [result], "previous_response_id": first.id})
    assert status == 200
    _no_markup(events)
    assert plain(await c.responses.retrieve(chained["id"])) == chained
    history = [{"role": "user", "content": "What is the weather in Paris?"}, *[plain(i) for i in first.output], result]
    stateless = await c.responses.create(**ask, input=history, store=False)
    assert stateless.usage.input_tokens == chained["usage"]["input_tokens"]
    # greedy decoding over the same prompt: the same answer both ways
    assert [plain(i)["type"] for i in stateless.output] == [i["type"] for i in chained["output"]]
    texts = [p["text"] for i in chained["output"] if i["type"] == "message" for p in i["content"]]
    assert [t for t in texts] == [p.text for i in stateless.output if i.type == "message" for p in i.content]


@needs_guided
async def test_json_schema_output_validates(gateway):
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}
    status, events, final = await raw_stream(gateway, {**GREEDY, "max_output_tokens": 64, "text": {"format": fmt},
                                                       "input": "Invent a person: name and age, as JSON."})
    assert status == 200 and final["status"] == "completed", final["status"]
    jsonschema.validate(json.loads(final["output"][0]["content"][0]["text"]), PERSON_SCHEMA)
