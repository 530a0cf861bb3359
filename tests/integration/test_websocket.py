"""WebSocket mode of /v1/responses, end to end over the scripted engine.

Every response stream read here goes through check_stream (sequence numbers from 0 per
response, event order, item ids, SDK event types), like the SSE streams.
"""
from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai.types.responses.responses_server_event import ResponseWsError

from tests.fixtures.gateway import AUTH_KEYS, check_stream, parse_sse, start_gateway
from tests.integration.scripted_stack import start_stack

QUESTION = "What did I say my name was?"
STORY = "Tell me a long story"


def reply(prompt: str) -> str:
    if STORY in prompt:
        return "and then " * 400
    if QUESTION in prompt:
        return "Your name is Ada." if "My name is Ada" in prompt else "I do not know."
    return "Nice to meet you."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    # a small per-token delay, so a long reply is still running when the client leaves
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("websocket"), reply, step_delay=0.005)
    yield s
    await s.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def ws(stack):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(stack.handle.base_url.replace("http", "ws", 1) + "/responses") as conn:
            yield conn


def create(**body) -> dict:
    return {"type": "response.create", "model": "default", **body}


async def next_event(ws) -> dict:
    msg = await asyncio.wait_for(ws.receive(), 30)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def read_response(ws) -> tuple[list[dict], dict]:
    """One response's events up to its terminal event; (events, final response)."""
    events = []
    while True:
        event = await next_event(ws)
        assert event["type"] != "error", event
        events.append(event)
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            return events, check_stream(events)


async def read_error(ws) -> dict:
    event = await next_event(ws)
    assert event["type"] == "error", event
    ResponseWsError.model_validate(event)
    return event


async def test_sequential_responses_on_one_socket(stack, ws):
    await ws.send_json(create(input="Hello"))
    await ws.send_json(create(input="Hello again", stream_id="lane-2"))  # queued behind the first
    first_events, first = await read_response(ws)
    second_events, second = await read_response(ws)
    assert first["id"] != second["id"]
    assert first["output"][0]["content"][0]["text"] == "Nice to meet you."
    assert all(e["stream_id"] == "lane-2" for e in second_events)
    assert not any("stream_id" in e for e in first_events)
    stored = await stack.handle.client.responses.retrieve(second["id"])  # store defaults to true
    assert stored.id == second["id"]


async def test_stored_socket_response_replays_over_sse(stack, ws):
    """A stored WebSocket response is event-logged: GET ?stream=true replays the same events."""
    await ws.send_json(create(input="Hello", stream_id="lane-9"))
    sent, final = await read_response(ws)
    url = f"{stack.handle.base_url}/responses/{final['id']}?stream=true"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            assert r.status == 200
            replayed = parse_sse(await r.text())
        async with session.get(url + "&starting_after=2") as r:
            tail = parse_sse(await r.text())
    assert replayed == [{k: v for k, v in e.items() if k != "stream_id"} for e in sent]
    assert check_stream(replayed)["id"] == final["id"]
    assert [e["sequence_number"] for e in tail] == list(range(3, len(sent)))


async def test_store_false_turns_continue_on_the_same_socket(stack, ws):
    await ws.send_json(create(input="My name is Ada", store=False))
    _, first = await read_response(ws)
    await ws.send_json(create(input=QUESTION, store=False, previous_response_id=first["id"]))
    _, second = await read_response(ws)
    assert second["output"][0]["content"][0]["text"] == "Your name is Ada."
    assert second["previous_response_id"] == first["id"]
    # nothing was stored: over HTTP that id is unknown
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.handle.base_url + "/responses", json={
                "model": "default", "input": QUESTION, "previous_response_id": first["id"]}) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "previous_response_not_found"
    # a third turn continues the second (the remembered history grows)
    await ws.send_json(create(input=QUESTION, store=False, previous_response_id=second["id"]))
    _, third = await read_response(ws)
    assert third["output"][0]["content"][0]["text"] == "Your name is Ada."
    assert stack.prompts[-1].count("Your name is Ada.") == 1


async def test_unknown_previous_response_is_an_error_event_and_the_socket_lives(stack, ws):
    await ws.send_json(create(input="Hi", previous_response_id="resp_missing", stream_id="s1"))
    error = await read_error(ws)
    assert error["error"]["code"] == "previous_response_not_found" and error["status"] == 404
    assert error["stream_id"] == "s1" and error["error"]["param"] == "previous_response_id"
    await ws.send_json(create(input="Hi"))
    _, final = await read_response(ws)
    assert final["status"] == "completed"


async def test_bad_frames_are_error_events(stack, ws):
    for frame, code in [("not json", None), ("[1, 2]", None),
                        (json.dumps({"type": "response.cancel"}), "unsupported_event_type"),
                        (json.dumps({"type": "response.inject", "response_id": "resp_1", "input": [
                            {"type": "function_call_output", "call_id": "c1", "output": "4"}]}),
                         "unsupported_event_type"),
                        (json.dumps(create(input="Hi", temperature=9)), None),
                        (json.dumps(create(input="Hi", background=True)), "unsupported_parameter")]:
        await ws.send_str(frame)
        error = await read_error(ws)
        assert error["status"] == 400 and error["error"]["type"] == "invalid_request_error", (frame, error)
        assert error["error"]["code"] == code, (frame, error)
    await ws.send_bytes(json.dumps(create(input="Hi")).encode())  # binary frames carry JSON too
    _, final = await read_response(ws)
    assert final["status"] == "completed"


async def test_a_failed_continuation_evicts_the_remembered_turn(stack, ws):
    await ws.send_json(create(input="My name is Ada", store=False))
    _, first = await read_response(ws)
    await ws.send_json(create(input=QUESTION, store=False, previous_response_id=first["id"], top_p=7))
    assert (await read_error(ws))["error"]["param"] == "top_p"
    await ws.send_json(create(input=QUESTION, store=False, previous_response_id=first["id"]))
    assert (await read_error(ws))["error"]["code"] == "previous_response_not_found"


async def test_closing_mid_response_cancels_it(stack):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(stack.handle.base_url.replace("http", "ws", 1) + "/responses") as ws:
            await ws.send_json(create(input=STORY))
            response_id = None
            while True:
                event = await next_event(ws)
                response_id = response_id or event.get("response", {}).get("id")
                if event["type"] == "response.output_text.delta":
                    break
            await stack.wait_running()
    await stack.wait_idle()  # the engine request was aborted, long before its 400 tokens
    stored = None
    for _ in range(200):  # the cancelled state is saved in the background (the log lags the client)
        with contextlib.suppress(openai.NotFoundError):
            stored = await stack.handle.client.responses.retrieve(response_id)
            if stored.status == "cancelled":
                break
        await asyncio.sleep(0.05)
    assert stored is not None and stored.status == "cancelled"
    assert len(stored.output[0].content[0].text) < len("and then " * 400)


async def test_the_openai_sdk_websocket_client(stack):
    """`client.responses.connect()` (needs openai's `realtime` extra: the websockets package)."""
    pytest.importorskip("websockets")
    async with stack.handle.client.responses.connect() as conn:
        follow_up: dict = {}  # the second turn continues the first
        for text in ("My name is Ada", QUESTION):
            await conn.response.create(model="default", input=text, store=False, **follow_up)
            events = []
            async for event in conn:
                events.append(event.to_dict(warnings=False))
                if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
                    break
            final = check_stream(events)
            follow_up = {"previous_response_id": final["id"]}
    assert final["output"][0]["content"][0]["text"] == "Your name is Ada."


async def test_plain_get_is_not_a_websocket(stack):
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.handle.base_url + "/responses") as resp:
            body = await resp.json()
    assert resp.status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_sockets_need_a_key_and_see_only_their_tenant(stack, tmp_path):
    handle, runner = await start_gateway(stack.server.address, tmp_path, api_keys=AUTH_KEYS)
    url = handle.base_url.replace("http", "ws", 1) + "/responses"
    try:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(url)
                raise AssertionError("the handshake should have been refused")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
            keys = [{"Authorization": f"Bearer {key}"} for key in AUTH_KEYS]
            async with session.ws_connect(url, headers=keys[0]) as alice:
                await alice.send_json(create(input="My name is Ada"))
                _, stored = await read_response(alice)
            async with session.ws_connect(url, headers=keys[1]) as bob:
                await bob.send_json(create(input=QUESTION, previous_response_id=stored["id"]))
                assert (await read_error(bob))["error"]["code"] == "previous_response_not_found"
    finally:
        await handle.client.close()
        await runner.cleanup()
