"""How ``/metrics`` counts WebSockets (``trtllm_gateway_http_requests_total``, route
``/v1/responses``, method GET): a socket the client closes normally (1000) after its
responses were answered counts as 101, the status it was sent; one closed mid-response, or
dropped without a close frame, counts as 499 (the client left). Over the scripted engine.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct

import aiohttp
import pytest_asyncio

from tests.fixtures.waiting import read_until_seen, until
from tests.integration.scripted_stack import start_stack
from tests.integration.test_websocket import STORY, create, next_event, read_response, reply


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("websocket-metrics"), reply, step_delay=0.005)
    yield s
    await s.stop()


async def _counts(stack) -> dict[str, float]:
    """Socket counts by status, read from /metrics."""
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.handle.root + "/metrics") as r:
            text = await r.text()
    pattern = r'trtllm_gateway_http_requests_total\{method="GET",route="/v1/responses",status="(\d+)"\} (\S+)'
    return {status: float(value) for status, value in re.findall(pattern, text)}


async def _next_count(stack, before: dict[str, float]) -> str:
    """The status of the one socket counted since ``before`` (each handler records it when
    it has wound down, a little after the client is gone)."""
    async def changed() -> dict[str, float]:
        now = await _counts(stack)
        return {s: now[s] - before.get(s, 0.0) for s in now if now[s] != before.get(s, 0.0)}
    new = await until(changed, timeout=30)
    assert new, "the socket was never counted"
    assert list(new.values()) == [1.0], new
    return next(iter(new))


def _url(stack) -> str:
    return stack.handle.base_url.replace("http", "ws", 1) + "/responses"


async def test_a_socket_closed_normally_after_its_turns_counts_as_101(stack):
    for store in (False, True):  # a stored response ends with its event log's last write
        before = await _counts(stack)
        async with aiohttp.ClientSession() as session, session.ws_connect(_url(stack)) as ws:
            for text in ("Hello", "Hello again"):
                await ws.send_json(create(input=text, store=store))
                _, final = await read_response(ws)
                assert final["status"] == "completed"
            # leaving the block closes with 1000 right after the last terminal event
        assert await _next_count(stack, before) == "101"


async def test_a_socket_closed_mid_response_counts_as_499(stack):
    before = await _counts(stack)
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(stack)) as ws:
        await ws.send_json(create(input=STORY))
        while (await next_event(ws))["type"] != "response.output_text.delta":
            pass
        await ws.close()  # a normal close frame, but the response was still running
    assert await _next_count(stack, before) == "499"
    await stack.wait_idle()


async def test_a_socket_closed_with_a_create_still_waiting_counts_as_499(stack):
    before = await _counts(stack)
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(stack)) as ws:
        await ws.send_json(create(input="Hello"))
        await ws.send_json(create(input="Hello again"))
        await read_response(ws)
        # the second create is waiting or running: it was never answered
    assert await _next_count(stack, before) == "499"
    await stack.wait_idle()


async def test_a_socket_dropped_mid_response_counts_as_499(stack):
    """A raw client: the handshake, one masked create frame, then a reset (no close frame)."""
    before = await _counts(stack)
    port = int(stack.handle.root.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    writer.write(_masked_text_frame(json.dumps(create(input=STORY)).encode()))
    await read_until_seen(reader, b"response.output_text.delta")
    writer.transport.abort()
    assert await _next_count(stack, before) == "499"
    await stack.wait_idle()


def _masked_text_frame(payload: bytes) -> bytes:
    """One final text frame as a client sends it (RFC 6455 §5.2: masked, length <= 65535)."""
    mask = os.urandom(4)
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
