"""Create responses through the real gateway, service, model and SQLite store, with the SDK.

Every stream a test produces goes through `check_stream` (typed events, sequence numbers,
item ids, one terminal event, order).
"""
from __future__ import annotations

import openai
from openai.types.responses import Response

from tests.fixtures.gateway import check_stream, plain, raw_stream

SHORT = {"temperature": 0, "max_output_tokens": 24}


async def test_create_json_matches_the_stored_copy(gateway):
    resp = await gateway.client.responses.create(model="default", input="Say hello.", **SHORT)
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status in ("completed", "incomplete")
    assert resp.output_text, "the model produced no text"
    assert resp.model == (await gateway.client.models.list()).data[0].id
    usage = resp.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    stored = await gateway.client.responses.retrieve(resp.id)
    assert plain(stored) == plain(resp)


async def test_every_reference_field_is_present(gateway):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.base_url + "/responses",
                                json={"model": "default", "input": "Hi", **SHORT}) as r:
            body = await r.json()
    expected = {"id", "object", "created_at", "completed_at", "status", "error", "incomplete_details",
                "instructions", "model", "output", "parallel_tool_calls", "previous_response_id", "reasoning",
                "store", "temperature", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
                "max_output_tokens", "max_tool_calls", "text", "tool_choice", "tools", "truncation", "usage",
                "user", "metadata", "background", "safety_identifier", "prompt_cache_key", "service_tier"}
    assert expected <= set(body)
    assert body["text"]["format"] == {"type": "text"}
    Response.model_validate(body)


async def test_stream_final_equals_completed_event_and_stored(gateway):
    events = []
    async with gateway.client.responses.stream(model="default", input="Reply with one word: yes.", temperature=0,
                                             max_output_tokens=192) as stream:
        async for event in stream:
            events.append(plain(event))
        final = await stream.get_final_response()
    terminal = check_stream(events)
    assert terminal["status"] == "completed"  # the SDK accumulates only completed streams
    assert plain(final)["output"] == terminal["output"]
    stored = await gateway.client.responses.retrieve(final.id)
    assert plain(stored) == terminal
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == final.output_text and deltas


async def test_raw_stream_framing_and_types(gateway):
    status, events, final = await raw_stream(gateway, {"model": "default", "input": "Count to five.", **SHORT})
    assert status == 200
    assert all(e["logprobs"] == [] for e in events if e["type"] == "response.output_text.delta")
    msg_ids = {e["item_id"] for e in events if "item_id" in e}
    assert msg_ids == {item["id"] for item in final["output"]}


async def test_max_output_tokens_gives_incomplete_in_both_modes(gateway):
    body = {"model": "default", "input": "Write a long story about a dragon.", "temperature": 0,
            "max_output_tokens": 16}
    resp = await gateway.client.responses.create(**body)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage.output_tokens == 16 and resp.output_text
    status, events, final = await raw_stream(gateway, body)
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    stored = await gateway.client.responses.retrieve(final["id"])
    assert stored.status == "incomplete"


async def test_multi_turn_with_previous_response_id_over_three_turns(gateway):
    c = gateway.client
    first = await c.responses.create(model="default", input="My name is Zed. Remember it.", **SHORT)
    second = await c.responses.create(model="default", input="What is my name?",
                                      previous_response_id=first.id, **SHORT)
    third = await c.responses.create(model="default", input="Say it again.", previous_response_id=second.id, **SHORT)
    # the model saw the history: each prompt holds the previous prompt, its answer and the new input
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    assert third.previous_response_id == second.id
    count = await c.responses.input_tokens.count(model="default", input="Say it again.",
                                                 previous_response_id=second.id)
    assert count.input_tokens == third.usage.input_tokens


async def test_stateless_multi_turn_with_full_history_matches_stored_chain(gateway):
    c = gateway.client
    first = await c.responses.create(model="default", input="Hello!", store=False, **SHORT)
    history = [{"role": "user", "content": "Hello!"},
               {"role": "assistant", "content": first.output_text},
               {"role": "user", "content": "How are you?"}]
    stateless = await c.responses.create(model="default", input=history, store=False, **SHORT)
    chained_first = await c.responses.create(model="default", input="Hello!", **SHORT)
    chained = await c.responses.create(model="default", input="How are you?",
                                       previous_response_id=chained_first.id, **SHORT)
    assert chained_first.output_text == first.output_text  # greedy: same first answer
    assert stateless.usage.input_tokens == chained.usage.input_tokens
    assert stateless.output_text == chained.output_text


async def test_instructions_apply_to_their_turn_only(gateway):
    c = gateway.client
    instructions = "You are a pirate. Always answer in pirate speak, matey."
    first = await c.responses.create(model="default", input="Hi", instructions=instructions, **SHORT)
    assert first.instructions == instructions
    as_system = await c.responses.input_tokens.count(
        model="default", input=[{"role": "system", "content": instructions}, {"role": "user", "content": "Hi"}])
    assert first.usage.input_tokens == as_system.input_tokens  # instructions = the first system message
    second = await c.responses.create(model="default", input="Bye", previous_response_id=first.id, **SHORT)
    assert second.instructions is None
    # without carried-over instructions, turn 2's prompt is turn 1's prompt minus the
    # instructions, plus turn 1's answer and the new input
    expected = await c.responses.input_tokens.count(
        model="default", input=[{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": first.output_text},
                                {"role": "user", "content": "Bye"}])
    assert second.usage.input_tokens == expected.input_tokens


async def test_store_false_stores_nothing(gateway):
    resp = await gateway.client.responses.create(model="default", input="Hi", store=False, **SHORT)
    assert resp.store is False
    try:
        await gateway.client.responses.retrieve(resp.id)
        raise AssertionError("a store:false response was retrievable")
    except openai.NotFoundError:
        pass
    status, events, final = await raw_stream(gateway, {"model": "default", "input": "Hi", "store": False, **SHORT})
    assert status == 200 and final["store"] is False
    try:
        await gateway.client.responses.retrieve(final["id"])
        raise AssertionError("a streamed store:false response was retrievable")
    except openai.NotFoundError:
        pass


async def test_metadata_and_echoed_settings(gateway):
    resp = await gateway.client.responses.create(model="default", input="Hi", metadata={"k": "v"}, top_p=0.9,
                                                 user="u1", **SHORT)
    assert resp.metadata == {"k": "v"} and resp.top_p == 0.9 and resp.temperature == 0
    assert resp.max_output_tokens == SHORT["max_output_tokens"] and resp.truncation == "disabled"
    assert resp.user == "u1" and resp.tools == [] and resp.tool_choice == "auto"
