"""Request size limits and off-loop parsing over real HTTP (issue 14, defect 10).

A legal body of a few megabytes with 300,000 input items used to block the event loop for
seconds. Items, parts, tools and schema bytes are now bounded (each a 400 naming the field),
and large bodies are parsed and validated in a worker thread while the loop goes on serving.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import pytest_asyncio

from tests.fixtures.gateway import scripted_gateways

SMALL = {"max_input_items": 5, "max_content_parts": 3, "max_tools": 2, "max_schema_bytes": 300}
BIG_INPUT = 10_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stacks(tokenizer, tmp_path_factory):
    """(gateway with small limits, gateway with room for BIG_INPUT items) over one service."""
    async with scripted_gateways(tokenizer, tmp_path_factory, "scripted-limits", SMALL,
                                 {"max_input_items": BIG_INPUT}) as (small, big):
        yield small, big


async def _post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()


def _msg(text="x", parts: int | None = None) -> dict:
    if parts is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "input_text", "text": text}] * parts}


def _tool(i: int, schema: dict | None = None) -> dict:
    return {"type": "function", "name": f"f{i}", "parameters": schema or {"type": "object"}}


LIMIT_CASES = [
    # (body fields, param)
    ({"input": [_msg()] * 6}, "input"),
    ({"input": [_msg(parts=4)]}, "input[0].content"),
    ({"input": [_msg(parts=3)] * 2}, "input"),  # 6 parts in all: over max_input_items (5)
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"text": "a"}] * 4}]}, "input[0].output"),
    ({"input": "hi", "tools": [_tool(i) for i in range(3)]}, "tools"),
    ({"input": "hi", "tools": [_tool(0, {"type": "object", "description": "d" * 400})]}, "tools[0].parameters"),
    ({"input": "hi", "tools": [_tool(0, {"type": "object", "description": "d" * 200}),
                              _tool(1, {"type": "object", "description": "d" * 200})]}, "tools[1].parameters"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "o",
                                         "schema": {"type": "object", "description": "é" * 200}}}},
     "text.format.schema"),  # 200 characters, 400 bytes of UTF-8
]


@pytest.mark.parametrize("fields, param", LIMIT_CASES)
@pytest.mark.parametrize("route", ["/responses", "/responses/input_tokens"])
async def test_each_limit_is_a_400_naming_the_field(stacks, fields, param, route):
    small, _ = stacks
    status, body = await _post(small.base_url + route, {"model": "default", **fields})
    assert status == 400, body
    err = body["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, None), err
    assert "at most" in err["message"] or "exceed" in err["message"], err["message"]


async def test_within_the_limits_is_served(stacks):
    small, _ = stacks
    status, body = await _post(small.base_url + "/responses", {
        "model": "default", "input": [_msg(parts=3), _msg(), _msg()], "tools": [_tool(0), _tool(1)],
        "max_output_tokens": 16})
    assert status == 200 and body["status"] == "completed", body


async def test_a_large_body_is_validated_while_the_loop_keeps_running(stacks):
    """The gateway runs on this test's event loop. While it validates BIG_INPUT items (and then
    refuses the last one), a ticker coroutine counts loop iterations. Validated on the loop,
    the ticker would only run in the few iterations of the upload and the reply (tens);
    validated in a worker thread, it runs all along (thousands)."""
    _, big = stacks
    items = [_msg("")] * (BIG_INPUT - 1) + [{"role": "robot", "content": ""}]
    raw = json.dumps({"model": "default", "input": items}).encode()
    ticks, done = 0, False

    async def ticker():
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        status, body = await _post(big.base_url + "/responses", raw)
    finally:
        done = True
        await task
    assert status == 400 and body["error"]["param"] == f"input[{BIG_INPUT - 1}].role", body
    assert ticks > 500, ticks
    async with aiohttp.ClientSession() as session:
        async with session.get(big.root + "/healthz") as r:
            assert r.status == 200
