"""A save that fails is never answered as stored (issue 14, defect 8).

The database refuses writes of responses through a real SQLite trigger (``RAISE(ABORT)``),
installed on the running gateway's own database file: no part of the gateway is replaced.
"""
from __future__ import annotations

import sqlite3

import aiohttp
import pytest_asyncio

from tests.fixtures.gateway import check_stream, raw_stream, start_gateway
from trtllm_gateway.store import open_store

REFUSE = ("CREATE TRIGGER refuse_responses BEFORE INSERT ON responses "
          "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END")
BODY = {"model": "default", "input": "Say hi.", "max_output_tokens": 16}


@pytest_asyncio.fixture(loop_scope="session")
async def refusing(service, tmp_path):
    async with open_store(f"sqlite:///{tmp_path}/responses.db"):
        pass  # the real store creates its schema; the trigger goes in before the gateway opens it
    with sqlite3.connect(tmp_path / "responses.db") as db:
        db.execute(REFUSE)
    handle, runner = await start_gateway(service.address, tmp_path)
    yield handle
    await handle.client.close()
    await runner.cleanup()


async def test_json_reply_whose_save_fails_is_503_not_200(refusing):
    async with aiohttp.ClientSession() as s:
        async with s.post(refusing.base_url + "/responses", json=BODY) as r:
            status, body = r.status, await r.json()
        assert status == 503
        assert body["error"]["code"] == "store_unavailable" and body["error"]["type"] == "server_error"
        assert "could not be stored" in body["error"]["message"]
        async with s.post(refusing.base_url + "/responses", json=dict(BODY, store=False)) as r:
            assert r.status == 200 and (await r.json())["status"] in ("completed", "incomplete")


async def test_stored_stream_whose_save_fails_ends_failed(refusing):
    status, events, final = await raw_stream(refusing, dict(BODY, stream=True))
    assert status == 200
    check_stream(events)
    assert events[-1]["type"] == "response.failed"
    assert final["status"] == "failed" and "could not be stored" in final["error"]["message"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{refusing.base_url}/responses/{final['id']}") as r:
            assert r.status == 404  # nothing claims it was stored
