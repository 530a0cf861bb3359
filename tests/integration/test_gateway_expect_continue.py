"""``Expect: 100-continue`` over a raw socket (RFC 9110 §10.1.1): the gateway answers a
request it will refuse (a ``Content-Length`` over ``--max-body-bytes``, no API key) at once,
without ``100 Continue``, so the client never uploads the body; the reply closes the
connection. So does a request no route takes (404, 405). A request it accepts gets
``100 Continue``, then its answer once the body is in.
A client that leaves mid-upload is counted 499 and logs no traceback.
The stack is real (scripted engine, service, gateway, SQLite).
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import pytest_asyncio

from tests.fixtures.gateway import start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import until

LIMIT = 64 * 1024
KEY = "sk-expect"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def handle(tokenizer, tmp_path_factory):
    server = await serve_in_process(ScriptedEngine(tokenizer, "ok", model_id="scripted-expect"))
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp("expect"),
                                         max_body_bytes=LIMIT, api_keys=(KEY,))
    yield handle
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


async def _open(handle) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(handle.root.rsplit(":", 1)[1]))


def _head(path: str, length: int, key: str | None = KEY) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n").encode()


async def _reply(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], dict]:
    """One final response: (status line, headers with lower-case names, JSON body)."""
    lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode().split("\r\n")
    assert not lines[0].startswith("HTTP/1.1 1"), f"an interim response where a final one was due: {lines[0]}"
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    headers = {k.lower(): v for k, v in headers.items()}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    return lines[0], headers, json.loads(body)


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact",
                                  "/v1/conversations"])
async def test_an_oversized_content_length_is_413_before_100_continue(handle, path):
    reader, writer = await _open(handle)
    try:
        writer.write(_head(path, LIMIT + 1))  # and never the body
        status, headers, body = await _reply(reader)
        assert status.startswith("HTTP/1.1 413 "), status  # not "HTTP/1.1 100 Continue"
        assert body["error"]["code"] == "request_too_large" and body["error"]["type"] == "invalid_request_error"
        assert headers["connection"].lower() == "close"
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed: nothing else follows
    finally:
        writer.close()


async def test_a_request_without_a_key_is_401_before_100_continue(handle):
    reader, writer = await _open(handle)
    try:
        writer.write(_head("/v1/responses", 100, key=None))
        status, headers, body = await _reply(reader)
        assert status.startswith("HTTP/1.1 401 ") and body["error"]["code"] == "invalid_api_key", status
        assert headers["connection"].lower() == "close"
    finally:
        writer.close()


async def test_an_accepted_request_gets_100_continue_then_its_answer(handle):
    body = json.dumps({"model": "default", "input": "Hi"}).encode()
    reader, writer = await _open(handle)
    try:
        for _ in range(2):  # and the connection stays usable
            writer.write(_head("/v1/responses", len(body)))
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            status, headers, resp = await _reply(reader)
            assert status.startswith("HTTP/1.1 200 ") and resp["status"] == "completed", (status, resp)
            assert headers.get("connection", "keep-alive").lower() != "close"
    finally:
        writer.close()


async def test_a_client_that_leaves_mid_upload_is_499_with_no_traceback(handle, caplog):
    reader, writer = await _open(handle)
    head = (f"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n").encode()
    writer.write(head + b'{"model": "default", "input": "')  # then the client goes away
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    metrics = handle.root + "/metrics"

    async def counted() -> str | None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
            async with session.get(metrics) as r:
                text = await r.text()
        return text if 'status="499"' in text or 'status="500"' in text else None
    text = await until(counted, 30, 0.05)
    assert text and 'status="500"' not in text and 'status="499"' in text
    assert not [r for r in caplog.records if r.exc_info], "a client leaving is not a server error"


@pytest.mark.parametrize("method,path,status", [("POST", "/v1/no-such-route", 404), ("PUT", "/v1/responses", 405)])
async def test_a_request_no_route_takes_is_refused_before_100_continue(handle, method, path, status):
    reader, writer = await _open(handle)
    try:
        writer.write(_head(path, 100).replace(b"POST ", f"{method} ".encode(), 1))  # and never the body
        line, headers, body = await _reply(reader)
        assert line.startswith(f"HTTP/1.1 {status} "), line  # not "HTTP/1.1 100 Continue"
        assert body["error"]["type"] == "invalid_request_error"
        assert headers["connection"].lower() == "close"
    finally:
        writer.close()
