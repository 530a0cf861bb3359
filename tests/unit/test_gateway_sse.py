"""SSE framing, sequence numbers and keep-alive pings, through a real aiohttp server."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trtllm_gateway import sse
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.sse import SSEWriter, dumps, encode, frame
from trtllm_gateway.streaming import StreamState, finalize, on_delta, start
from trtllm_responses.inference.v1 import inference_pb2 as pb


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


def _deltas_of_every_kind(dialect: str, summary: bool) -> list[dict]:
    """Every event the state machine makes for reasoning, text (with and without logprobs),
    a function call and a custom tool call, numbered as the writers number them."""
    body = {"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "custom", "name": "c"}]}
    if summary:
        body["reasoning"] = {"summary": "auto"}
    req = parse_create(body)
    st = StreamState(new_response(req, "resp_t", "m", 1), dialect=dialect, logprobs=True,
                     custom_tools=frozenset({"c"}))
    lp = pb.TokenLogprob(token="x", logprob=-0.5, bytes=b"x")
    deltas = [pb.Delta(reasoning_text='think "é"\n'), pb.Delta(text="a\u2028\x00b"), pb.Delta(text="c", logprobs=[lp]),
              pb.Delta(tool_calls=[pb.ToolCallDelta(index=0, id="call_1", name="f", arguments_delta='{"k": ')]),
              pb.Delta(tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='"\\u00e9"}')]),
              pb.Delta(tool_calls=[pb.ToolCallDelta(index=1, id="call_2", name="c", arguments_delta='{"input": "x')])]
    events = start(st)
    for delta in deltas:
        events += on_delta(st, delta)
    events += finalize(st, pb.Final(finish_reason=pb.FINISH_REASON_STOP), now=2)[1]
    return [dict(e, sequence_number=i) for i, e in enumerate(events)]


@pytest.mark.parametrize(("dialect", "summary"), [("openai", False), ("open_responses", False), ("openai", True)])
def test_encode_is_dumps_and_templates_cover_the_hot_deltas(dialect, summary):
    events = _deltas_of_every_kind(dialect, summary)
    for event in events:
        assert encode(event) == dumps(event)
    # a change of a delta event's shape must not silently lose its template
    templated = {e["type"] for e in events if sse._TEMPLATES.get(tuple(e)) is not None}
    deltas = {e["type"] for e in events if e["type"].endswith(".delta") and "summary" not in e["type"]}
    assert deltas and deltas <= templated
