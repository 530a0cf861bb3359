"""Idempotency-Key on POST /v1/responses, end to end over the scripted engine.

The engine records every prompt it runs, so "the retry generated nothing" is observable.
"""
from __future__ import annotations

import asyncio

import aiohttp
import pytest_asyncio

from tests.fixtures.gateway import check_stream, parse_sse
from tests.integration.scripted_stack import start_stack

SLOW = "Take your time"


def reply(prompt: str) -> str:
    return "word " * 300 if SLOW in prompt else "Here is your answer."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("idempotency"), reply, step_delay=0.003)
    yield s
    await s.stop()


async def post(stack, body: dict, key: str | None):
    """(status, headers, JSON body or the SSE events)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.handle.base_url + "/responses", json=body, headers=headers) as resp:
            if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                return resp.status, resp.headers, parse_sse(await resp.text())
            return resp.status, resp.headers, await resp.json()


async def test_a_retry_returns_the_original_without_generating(stack):
    body = {"model": "default", "input": "Question one", "metadata": {"a": "1"}}
    status, headers, first = await post(stack, body, "key-json-1")
    assert status == 200 and "Idempotent-Replayed" not in headers
    runs = len(stack.prompts)
    reordered = {"metadata": {"a": "1"}, "input": "Question one", "model": "default"}  # same JSON, other order
    status, headers, again = await post(stack, reordered, "key-json-1")
    assert status == 200 and headers["Idempotent-Replayed"] == "true"
    assert again == first and len(stack.prompts) == runs
    # without the key (or with another) the same body is a new response
    status, _, other = await post(stack, body, "key-json-2")
    assert status == 200 and other["id"] != first["id"] and len(stack.prompts) == runs + 1


async def test_the_same_key_with_another_body_is_a_conflict(stack):
    assert (await post(stack, {"model": "default", "input": "A"}, "key-conflict"))[0] == 200
    status, _, err = await post(stack, {"model": "default", "input": "B"}, "key-conflict")
    assert status == 409 and err["error"]["code"] == "idempotency_key_reused"
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == "Idempotency-Key"


async def test_a_streamed_retry_is_replayed_as_the_same_stream(stack):
    body = {"model": "default", "input": "Stream it", "stream": True}
    status, _, events = await post(stack, body, "key-stream")
    assert status == 200
    original = check_stream(events)
    runs = len(stack.prompts)
    status, headers, replay = await post(stack, body, "key-stream")
    assert status == 200 and headers["Idempotent-Replayed"] == "true" and len(stack.prompts) == runs
    assert check_stream(replay) == original
    non_delta = [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert [e["type"] for e in replay if not e["type"].endswith(".delta")] == non_delta
    # the JSON variant of the same key is another body: a conflict, not a format switch
    status, _, err = await post(stack, {**body, "stream": False}, "key-stream")
    assert status == 409 and err["error"]["code"] == "idempotency_key_reused"


async def test_a_retry_while_running_is_409_then_replays(stack):
    body = {"model": "default", "input": SLOW}
    first = asyncio.ensure_future(post(stack, body, "key-running"))
    await stack.wait_running()
    status, headers, err = await post(stack, body, "key-running")
    assert status == 409 and err["error"]["code"] == "idempotency_request_in_progress"
    assert headers["Retry-After"] == "1"
    status, _, original = await first
    assert status == 200 and original["status"] == "completed"
    status, headers, again = await post(stack, body, "key-running")
    assert status == 200 and again == original and headers["Idempotent-Replayed"] == "true"


async def test_errors_and_disconnects_release_the_key(stack):
    bad = {"model": "nope", "input": "x"}
    assert (await post(stack, bad, "key-released"))[0] == 404
    status, _, err = await post(stack, bad, "key-released")  # ran again (not replayed, not "in progress")
    assert status == 404 and err["error"]["code"] == "model_not_found"
    status, _, ok = await post(stack, {"model": "default", "input": "x"}, "key-released")
    assert status == 200 and ok["status"] == "completed"

    # a client that leaves mid-stream: the response is cancelled and the key released
    body = {"model": "default", "input": SLOW, "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.handle.base_url + "/responses", json=body,
                                headers={"Idempotency-Key": "key-left"}) as resp:
            await resp.content.readuntil(b"response.output_text.delta")
    await stack.wait_idle()
    for _ in range(100):  # the cancelled save (and the release) run in the background
        status, _, events = await post(stack, {**body, "stream": False, "input": "probe"}, "key-left")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200, events  # a new body under the released key is a fresh request


async def test_bad_keys_are_400(stack):
    for key in ("x" * 256, "tab\tkey", ""):
        status, _, err = await post(stack, {"model": "default", "input": "x"}, key)
        assert status == 400 and err["error"]["param"] == "Idempotency-Key", key


async def test_a_background_create_replays_its_queued_answer_and_its_log(stack):
    body = {"model": "default", "input": "In the background, please", "background": True}
    status, _, first = await post(stack, body, "key-bg")
    assert status == 200 and first["status"] == "queued"
    status, headers, again = await post(stack, body, "key-bg")
    assert status == 200 and again == first and headers["Idempotent-Replayed"] == "true"
    streamed = {**body, "stream": True}
    status, _, events = await post(stack, streamed, "key-bg-stream")
    assert status == 200 and events[0]["type"] == "response.queued" and events[-1]["type"] == "response.completed"
    status, headers, replay = await post(stack, streamed, "key-bg-stream")
    assert status == 200 and replay == events  # the same logged events, followed again
