"""``--event-log background``: only background responses keep an event log, as OpenAI.

A foreground stored stream (SSE or WebSocket) is then saved once, at its end, before its
terminal event is sent, as a JSON reply is; it cannot be resumed, its log has no rows, and
a save that fails still ends it ``response.failed``. Background responses keep their log
(and resume). Real gateway, real service with the CPU model, real SQLite file.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import pytest_asyncio

from tests.fixtures.gateway import check_stream, parse_sse, plain, raw_stream, start_gateway
from tests.integration.test_store_failure import REFUSE
from trtllm_gateway.store import open_store

BODY = {"model": "default", "input": "Say hi.", "max_output_tokens": 16, "temperature": 0}


@pytest_asyncio.fixture(loop_scope="session")
async def unlogged(service, tmp_path):
    handle, runner = await start_gateway(service.address, tmp_path, event_log="background")
    handle.db = tmp_path / "responses.db"
    yield handle
    await handle.client.close()
    await runner.cleanup()


def _logged_rows(db, response_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM stream_events WHERE response_id = ?", (response_id,)).fetchone()[0]


async def test_a_stored_stream_is_saved_at_its_end_without_a_log(unlogged):
    status, events, final = await raw_stream(unlogged, dict(BODY, stream=True))
    assert status == 200 and events[-1]["type"] in ("response.completed", "response.incomplete")
    assert check_stream(events) == final
    stored = await unlogged.client.responses.retrieve(final["id"])
    assert plain(stored) == final  # stored before the terminal event went out
    assert _logged_rows(unlogged.db, final["id"]) == 0
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{unlogged.base_url}/responses/{final['id']}", params={"stream": "true"}) as r:
            assert r.status == 400
            error = (await r.json())["error"]
    assert error["param"] == "stream" and "only background responses" in error["message"]


async def test_over_the_websocket_too(unlogged):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(unlogged.base_url.replace("http", "ws", 1) + "/responses") as ws:
            await ws.send_json({"type": "response.create", **BODY})
            events = []
            while not events or events[-1]["type"] not in ("response.completed", "response.incomplete"):
                events.append(json.loads((await ws.receive()).data))
    final = check_stream(events)
    assert plain(await unlogged.client.responses.retrieve(final["id"])) == final
    assert _logged_rows(unlogged.db, final["id"]) == 0


async def test_background_responses_keep_their_log(unlogged):
    async with aiohttp.ClientSession() as s:
        async with s.post(unlogged.base_url + "/responses", json=dict(BODY, background=True, stream=True)) as r:
            events = parse_sse((await r.read()).decode())
        final = check_stream(events)
        async with s.get(f"{unlogged.base_url}/responses/{final['id']}",
                         params={"stream": "true", "starting_after": "0"}) as r:
            assert r.status == 200
            replayed = parse_sse((await r.read()).decode())
    assert replayed == events[1:]
    assert _logged_rows(unlogged.db, final["id"]) == len(events)


async def test_a_client_that_leaves_gets_its_response_stored_cancelled(unlogged):
    body = dict(BODY, stream=True, input="Tell a long story.", max_output_tokens=400)
    async with aiohttp.ClientSession() as s:
        async with s.post(unlogged.base_url + "/responses", json=body) as r:
            first = await r.content.readuntil(b"\n\n")
    response_id = json.loads(first.decode().split("data: ", 1)[1])["response"]["id"]
    for _ in range(100):  # the save runs in the background once the gateway sees the client gone
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{unlogged.base_url}/responses/{response_id}") as r:
                if r.status == 200:
                    stored = await r.json()
                    break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"{response_id} was never stored")
    assert stored["status"] == "cancelled"
    assert _logged_rows(unlogged.db, response_id) == 0


async def test_a_save_that_fails_still_ends_the_stream_failed(service, tmp_path):
    async with open_store(f"sqlite:///{tmp_path}/responses.db"):
        pass
    with sqlite3.connect(tmp_path / "responses.db") as db:
        db.execute(REFUSE)
    handle, runner = await start_gateway(service.address, tmp_path, event_log="background")
    try:
        status, events, final = await raw_stream(handle, dict(BODY, stream=True))
    finally:
        await handle.client.close()
        await runner.cleanup()
    assert status == 200
    check_stream(events)
    assert events[-1]["type"] == "response.failed"
    assert final["status"] == "failed" and "could not be stored" in final["error"]["message"]
