"""Slow and hostile HTTP clients over raw sockets (issue 14, defects 12 and 14).

The gateway runs in-process (``http_server.make_runner``, as in production) with short
timeouts. Each test speaks raw HTTP/1.1 over an asyncio connection and checks what the
gateway does with it: trickled headers and bodies are cut off, a huge declared body is
refused before it is sent, connections past the cap are refused, and aiohttp's own parser
errors come back in the OpenAI envelope without echoing the client's bytes. Waits are
bounded by ``WAIT_S`` so a gateway that never closes fails the test instead of hanging it;
nothing asserts how fast anything happened.
"""
from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio

from tests.fixtures.gateway import scripted_gateways

WAIT_S = 30.0
TIMEOUTS = {"header_timeout_s": 0.5, "body_timeout_s": 0.5}
CAP = 4


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateways(tokenizer, tmp_path_factory):
    """(gateway with short timeouts, gateway with a small connection cap) over one service."""
    async with scripted_gateways(tokenizer, tmp_path_factory, "scripted-slow", TIMEOUTS,
                                 {"max_connections": CAP}) as (quick, capped):
        yield quick, capped


def _port(handle) -> int:
    return int(handle.root.rsplit(":", 1)[1])


async def _connect(handle):
    return await asyncio.open_connection("127.0.0.1", _port(handle))


async def _trickle_until_closed(reader, writer, data: bytes) -> bytes:
    """Send ``data`` a byte at a time until the server closes; returns what it answered."""
    received = b""
    for byte in data:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return received
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection was still open after {len(data)} trickled bytes")


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def _read_response(reader) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.wait_for(reader.read(), WAIT_S)  # until the server closes
    return _response(raw)


def _assert_envelope(body: bytes, status: int, expected: int, code: str | None = None) -> dict:
    assert status == expected, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return err


async def test_trickled_headers_get_the_connection_closed(gateways):
    quick, _ = gateways
    reader, writer = await _connect(quick)
    request = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000 + b"\r\n\r\n"
    received = await _trickle_until_closed(reader, writer, request)
    assert b"200 OK" not in received
    writer.close()


async def test_an_idle_connection_that_sends_nothing_is_closed(gateways):
    quick, _ = gateways
    reader, writer = await _connect(quick)
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    writer.close()


async def test_a_trickled_body_gets_408_and_the_connection_closed(gateways):
    quick, _ = gateways
    reader, writer = await _connect(quick)
    body = json.dumps({"model": "default", "input": "x" * 2000}).encode()
    writer.write(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    received = await _trickle_until_closed(reader, writer, body)
    status, headers, payload = _response(received)
    _assert_envelope(payload, status, 408, "request_timeout")
    assert headers.get("connection", "").lower() == "close"
    writer.close()


async def test_a_declared_huge_body_gets_413_before_it_is_sent(gateways):
    quick, _ = gateways
    reader, writer = await _connect(quick)
    writer.write(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000000\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status, headers, _ = _response(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT_S)
    err = _assert_envelope(body, status, 413, "request_too_large")
    assert "100000000" in err["message"]
    writer.close()


async def test_connections_past_the_cap_get_503_and_room_comes_back(gateways):
    _, capped = gateways
    held = [await _connect(capped) for _ in range(CAP)]
    reader, writer = await _connect(capped)
    status, headers, body = await _read_response(reader)
    _assert_envelope(body, status, 503, "server_busy")
    assert headers["retry-after"] == "1"
    writer.close()
    for _, w in held:
        w.close()
    for _ in range(200):  # the closed connections leave the server's table as it sees them close
        reader, writer = await _connect(capped)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = await _read_response(reader)
        writer.close()
        if status == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cap never made room again after the held connections closed")


MARK = b"ECHOMARK"
PARSER_ERRORS = [
    pytest.param(b"GET /" + MARK + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="request-line-over-8190"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + MARK + b"a" * 9000 + b"\r\n\r\n",
                 id="header-over-8190"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: " + MARK + b"\x01\x7f\r\n\r\n", id="control-characters"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX Bad" + MARK + b": v\r\n\r\n", id="space-in-header-name"),
    pytest.param(b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
    pytest.param(MARK + b"\r\n\r\n", id="not-http"),
]


@pytest.mark.parametrize("raw", PARSER_ERRORS)
async def test_parser_errors_are_400_in_the_envelope_without_echo(gateways, raw):
    quick, _ = gateways
    reader, writer = await _connect(quick)
    writer.write(raw)
    await writer.drain()
    status, headers, body = await _read_response(reader)
    writer.close()
    assert headers["content-type"].startswith("application/json"), headers
    err = _assert_envelope(body, status, 400)
    assert err["type"] == "invalid_request_error" and err["message"]
    assert MARK not in body and MARK.decode() not in json.dumps(headers)
