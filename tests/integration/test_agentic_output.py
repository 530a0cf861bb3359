"""Reasoning, structured output, logprobs and capability refusals, end to end.

The reasoning model path: the service runs the real `think` reasoning parser
(settings reasoning_parser="think") over a scripted `<think>...</think>` reply tokenized
by the real tokenizer (`agentic_stack.py`). Structured output: the constraint that
reaches the engine is checked, and the output validates against the schema (jsonschema).
"""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import pytest_asyncio

from tests.fixtures.gateway import check_stream, parse_sse, plain, raw_stream
from tests.integration.agentic_stack import PERSON_SCHEMA, SCRIPT, WEATHER_TOOL, start_agentic_stack, start_bare_stack

PERSON_FORMAT = {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_agentic_stack(tokenizer, tmp_path_factory)
    yield s
    await s.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(tokenizer, tmp_path_factory):
    s = await start_bare_stack(tokenizer, tmp_path_factory)
    yield s
    await s.stop()


# ---- reasoning ------------------------------------------------------------------------

async def test_reasoning_item_comes_first_and_streams_with_openai_names(stack):
    status, events, final = await raw_stream(stack.handle, {"model": "default", "input": "[[think]] 2+2?",
                                                            "reasoning": {"effort": "high"}})
    assert status == 200
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Two plus two is four."}]
    assert reasoning["summary"] == []
    assert message["content"][0]["text"] == "The answer is 4."
    types = [e["type"] for e in events]
    assert "response.reasoning_text.delta" in types and "response.reasoning_text.done" in types
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
    assert not any("<think>" in (e.get("delta") or "") for e in events)
    assert 0 < final["usage"]["output_tokens_details"]["reasoning_tokens"] < final["usage"]["output_tokens"]
    assert final["reasoning"] == {"effort": "high", "summary": None}
    assert plain(await stack.handle.client.responses.retrieve(final["id"])) == final


async def test_open_responses_dialect_names(stack):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(stack.open_responses.base_url + "/responses",
                                json={"model": "default", "input": "[[think]]", "stream": True}) as resp:
            events = parse_sse(await resp.text())
    final = check_stream(events, validate_types=False)  # the SDK does not know these event names
    types = [e["type"] for e in events]
    assert "response.reasoning.delta" in types and "response.reasoning.done" in types
    assert not any(t.startswith("response.reasoning_text") for t in types)
    assert final["output"][0]["type"] == "reasoning"


async def test_reasoning_items_replay_in_both_modes(stack):
    c = stack.handle.client
    first = await c.responses.create(model="default", input="[[think]] 2+2?")
    chained = await c.responses.create(model="default", input="[[plain]]", previous_response_id=first.id)
    stateless = await c.responses.create(model="default", store=False, input=[
        {"role": "user", "content": "[[think]] 2+2?"}, *[plain(item) for item in first.output],
        {"role": "user", "content": "[[plain]]"}])
    assert chained.output_text == stateless.output_text == SCRIPT["plain"]
    assert chained.usage.input_tokens == stateless.usage.input_tokens
    assert "The answer is 4." in stack.prompts[-1]


# ---- structured output ----------------------------------------------------------------

async def test_json_schema_output_validates_and_text_is_echoed(stack):
    body = {"model": "default", "input": "[[person]] Ada, 36", "text": {"format": PERSON_FORMAT}}
    status, events, final = await raw_stream(stack.handle, body)
    assert status == 200
    jsonschema.validate(json.loads(final["output"][0]["content"][0]["text"]), PERSON_SCHEMA)
    assert final["text"] == {"format": {**PERSON_FORMAT, "description": None}, "verbosity": "medium"}
    guided = stack.engine.guided[final["id"]]
    assert json.loads(guided.json_schema) == PERSON_SCHEMA
    resp = await stack.handle.client.responses.create(**body)
    jsonschema.validate(json.loads(resp.output_text), PERSON_SCHEMA)
    assert resp.text.format.type == "json_schema" and resp.text.format.name == "person"


async def test_json_object_format_reaches_the_engine(stack):
    resp = await stack.handle.client.responses.create(model="default", input="[[person]]",
                                                      text={"format": {"type": "json_object"}})
    assert stack.engine.guided[resp.id].json_object and isinstance(json.loads(resp.output_text), dict)


async def test_invalid_schema_is_400_naming_text_format_schema(stack):
    with pytest.raises(openai.BadRequestError) as info:
        await stack.handle.client.responses.create(model="default", input="x", text={"format": {
            "type": "json_schema", "name": "bad", "schema": {"type": "object", "required": "name"}}})
    assert info.value.status_code == 400 and info.value.body["param"] == "text.format.schema"


# ---- logprobs -------------------------------------------------------------------------

async def test_logprobs_in_deltas_and_parts_with_the_right_count(stack, tokenizer):
    expected = len(tokenizer(SCRIPT["plain"], add_special_tokens=False)["input_ids"])
    body = {"model": "default", "input": "[[plain]]", "top_logprobs": 3, "include": ["message.output_text.logprobs"]}
    status, events, final = await raw_stream(stack.handle, body)
    part = final["output"][0]["content"][0]
    assert len(part["logprobs"]) == expected
    assert all(len(lp["top_logprobs"]) == 3 for lp in part["logprobs"])
    streamed = [lp for e in events if e["type"] == "response.output_text.delta" for lp in e["logprobs"]]
    assert [lp["token"] for lp in streamed] == [lp["token"] for lp in part["logprobs"]]
    assert "".join(lp["token"] for lp in streamed) == part["text"]
    resp = await stack.handle.client.responses.create(**body)
    assert len(resp.output[0].content[0].logprobs) == expected and resp.top_logprobs == 3


async def test_no_logprobs_unless_asked(stack):
    resp = await stack.handle.client.responses.create(model="default", input="[[plain]]")
    assert resp.output[0].content[0].logprobs == []


# ---- capabilities ---------------------------------------------------------------------

@pytest.mark.parametrize("extra,param,capability", [
    ({"text": {"format": PERSON_FORMAT}}, "text.format", "structured_output"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice", "structured_output"),
    ({"include": ["message.output_text.logprobs"]}, "include", "logprobs"),
])
async def test_missing_capability_is_400_naming_it(bare, extra, param, capability):
    with pytest.raises(openai.BadRequestError) as info:
        await bare.handle.client.responses.create(model="default", input="x", **extra)
    assert info.value.body["param"] == param and f"'{capability}'" in info.value.body["message"]


async def test_bare_model_still_serves_auto_tools_and_ignores_effort(bare):
    resp = await bare.handle.client.responses.create(model="default", input="x", tools=[WEATHER_TOOL],
                                                     reasoning={"effort": "low"})
    assert resp.status == "completed" and resp.output_text == "OK."
