"""SSE framing, sequence numbers and keep-alive pings, through a real aiohttp server."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trtllm_gateway.sse import SSEWriter, frame


def test_frame_is_event_line_data_line_blank_line():
    data = frame({"type": "response.output_text.delta", "delta": "a\nb\r\u2028é", "sequence_number": 7})
    text = data.decode()
    assert text.startswith("event: response.output_text.delta\ndata: ")
    assert text.endswith("\n\n") and text.count("\n") == 3 and "\r" not in text
    payload = json.loads(text.split("\n")[1][len("data: "):])
    assert payload == {"type": "response.output_text.delta", "delta": "a\nb\r\u2028é", "sequence_number": 7}


async def _serve(handler) -> TestClient:
    app = web.Application()
    app.router.add_get("/s", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_writer_numbers_events_from_zero_and_writes_one_frame_per_event():
    async def handler(request):
        writer = SSEWriter(request, ping_interval=60)
        await writer.open()
        await writer.send_all([{"type": "a"}, {"type": "b"}, {"type": "c"}])
        await writer.close()
        return writer.response

    client = await _serve(handler)
    try:
        resp = await client.get("/s")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        body = await resp.text()
    finally:
        await client.close()
    frames = [f for f in body.split("\n\n") if f]
    events = [json.loads(f.split("\n")[1][6:]) for f in frames]
    assert [(e["type"], e["sequence_number"]) for e in events] == [("a", 0), ("b", 1), ("c", 2)]
    assert "[DONE]" not in body


async def test_idle_stream_gets_ping_comments_between_frames():
    seen_ping = asyncio.Event()

    async def handler(request):
        writer = SSEWriter(request, ping_interval=0.01)
        await writer.open()
        await writer.send({"type": "first"})
        await seen_ping.wait()  # stay idle until the client has seen a ping
        await writer.send({"type": "second"})
        await writer.close()
        return writer.response

    client = await _serve(handler)
    try:
        resp = await client.get("/s")
        lines = []
        async for raw in resp.content:
            line = raw.decode()
            lines.append(line)
            if line == ": ping\n":
                seen_ping.set()
    finally:
        await client.close()
    body = "".join(lines)
    assert ": ping\n\n" in body
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [(e["type"], e["sequence_number"]) for e in events] == [("first", 0), ("second", 1)]
