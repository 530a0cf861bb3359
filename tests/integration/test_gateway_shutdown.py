"""Shutdown keeps its promise (issue 14, defect 11): streams longer than
``--shutdown-timeout-s`` end with ``response.failed`` for their clients, and their stored
copy and event log say the same; nothing is cut mid-body."""
from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.fixtures.gateway import check_stream, parse_sse
from tests.integration.scripted_stack import start_stack
from trtllm_gateway.driver import SHUTDOWN
from trtllm_gateway.store import open_store

LONG = " ".join(f"word{i}" for i in range(400))  # at 0.05 s a token: far longer than the timeout
BODY = {"model": "default", "input": "Talk for a long time."}


async def _sse(url: str, store: bool) -> list[dict]:
    async with aiohttp.ClientSession() as s, s.post(url, json=dict(BODY, stream=True, store=store)) as r:
        assert r.status == 200
        return parse_sse((await r.read()).decode())


async def _json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url, json=BODY) as r:
        return r.status, await r.json()


async def _idle_socket(url: str, connected: asyncio.Event) -> int | None:
    async with aiohttp.ClientSession() as s, s.ws_connect(url.replace("http", "ws", 1)) as ws:
        connected.set()
        async for _ in ws:
            pass
        return ws.close_code


async def test_streams_past_the_timeout_end_failed_and_stay_consistent(tokenizer, tmp_path):
    stack = await start_stack(tokenizer, tmp_path, lambda _prompt: LONG, step_delay=0.05, shutdown_timeout_s=1.0)
    url = stack.handle.base_url + "/responses"
    try:
        connected = asyncio.Event()
        socket = asyncio.ensure_future(_idle_socket(url, connected))
        clients = [asyncio.ensure_future(c) for c in (_sse(url, True), _sse(url, False), _json(url))]
        await stack.wait_running()
        await connected.wait()
        await asyncio.sleep(0.5)  # every stream is well into its output
        await asyncio.wait_for(stack.runner.cleanup(), 30)
        stored, unstored, (status, body) = await asyncio.wait_for(asyncio.gather(*clients), 30)
        assert await asyncio.wait_for(socket, 30) == 1001  # closed by the gateway: going away
    finally:
        await stack.handle.client.close()
        await stack.server.stop()

    for events in (stored, unstored):
        final = check_stream(events)  # a whole, valid stream: every item closed, one terminal event
        assert events[-1]["type"] == "response.failed" and final["error"]["message"] == SHUTDOWN
        assert final["output"][0]["status"] == "incomplete" and final["output"][0]["content"][0]["text"]
    assert status == 200 and body["status"] == "failed" and body["error"]["message"] == SHUTDOWN

    async with open_store(f"sqlite:///{tmp_path}/responses.db") as store:
        rid = stored[0]["response"]["id"]
        record = await store.get(rid, "")
        assert record.status == "failed" and record.response == check_stream(stored)
        page = await store.read_events(rid, "", -1, 10_000)
        assert not page.open and [json.loads(e.payload) for e in page.events] == stored
        assert (await store.get(body["id"], "")).status == "failed"
