"""Streams that end early: client disconnect, full queue; and truncation (service death:
tests/e2e/test_service_process.py)."""
from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fixtures.gateway import start_gateway
from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import until
from trtllm_gateway.context import GATEWAY
from trtllm_responses.inference.v1 import inference_pb2 as pb

LONG = {"model": "default", "input": "Write a long story about a dragon who learns to bake bread.",
        "temperature": 0, "max_output_tokens": 1000, "stream": True}


async def _until(predicate, timeout: float = 60.0, interval: float = 0.1):
    """Polls an async predicate until true (integration-level wait for a background effect)."""
    return await until(predicate, timeout, interval)


async def _metric(url: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _read_until_first_delta(resp: aiohttp.ClientResponse) -> str:
    """Reads SSE lines until the first text delta; returns the response id."""
    response_id = None
    async for raw in resp.content:
        line = raw.decode()
        if line.startswith("data: ") and response_id is None:
            response_id = json.loads(line[6:])["response"]["id"]
        if line.startswith("event: response.output_text.delta"):
            return response_id
    raise AssertionError("the stream ended before any text")


async def test_client_disconnect_cancels_the_engine_request(gateway, service, stub):
    before = await _metric(service.metrics_url, "trtllm:requests_finished_total", finished_reason="cancelled")
    async with aiohttp.ClientSession() as session:
        resp = await session.post(gateway.base_url + "/responses", json=LONG)
        assert resp.status == 200
        response_id = await _read_until_first_delta(resp)
        resp.close()  # the client goes away mid-stream

    async def idle():
        return (await stub.GetLoad(pb.GetLoadRequest())).running == 0
    assert await _until(idle), "the engine request kept running after the client left"

    async def cancelled():
        return await _metric(service.metrics_url, "trtllm:requests_finished_total",
                             finished_reason="cancelled") == before + 1
    assert await _until(cancelled), "the service did not record a cancelled request"

    async def stored():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.base_url}/responses/{response_id}") as r:
                body = (await r.json()) if r.status == 200 else None
        # A stored stream is visible as in_progress from its first event; the cancelled
        # record lands with the gateway's final write, after the engine has let go.
        return body if body and body["status"] != "in_progress" else None
    record = await _until(stored)
    assert record and record["status"] == "cancelled" and record["output"][0]["status"] == "incomplete"
    gw = gateway.app[GATEWAY]
    assert gw.metrics.active_streams._value.get() == 0


async def test_full_queue_is_429_with_retry_after(cpu_engine, tmp_path):
    server = await serve_in_process(cpu_engine, max_batch_size=1, max_queue=0)
    handle, runner = await start_gateway(server.address, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            busy = await session.post(handle.base_url + "/responses", json=LONG)
            await _read_until_first_delta(busy)
            async with session.post(handle.base_url + "/responses",
                                    json={"model": "default", "input": "hi", "max_output_tokens": 16}) as r:
                body = await r.json()
                assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
                assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
            busy.close()
    finally:
        await handle.client.close()
        await runner.cleanup()
        await server.stop()


async def _turns_over_context(gateway, n_turns: int = 3) -> list[dict]:
    """A conversation whose user turns each take ~60% of the context: any two overflow it."""
    c = gateway.client
    c100 = (await c.responses.input_tokens.count(model="default", input="apple " * 100)).input_tokens
    c200 = (await c.responses.input_tokens.count(model="default", input="apple " * 200)).input_tokens
    context = (await gateway.app[GATEWAY].service.model_info()).max_context_length
    words = int(0.6 * context / ((c200 - c100) / 100))
    turns = []
    for i in range(n_turns):
        turns.append({"role": "user", "content": f"Turn {i}. " + "apple " * words})
        if i < n_turns - 1:
            turns.append({"role": "assistant", "content": "Noted."})
    return turns


@pytest.fixture
async def small_context_gateway(tmp_path):
    """The stack over a CPU engine of its own whose context is 1,024 tokens, so a conversation
    that overflows it prefills in seconds (the default model's 8k context would take a minute)."""
    from trtllm_service.engine.cpu import CpuEngine
    from trtllm_service.settings import ServiceSettings

    engine = CpuEngine(ServiceSettings(max_context_length=1024, cpu_kv_tokens=1024, max_batch_size=2))
    await engine.start()
    server = await serve_in_process(engine)
    handle, runner = await start_gateway(server.address, tmp_path)
    try:
        yield handle
    finally:
        await handle.client.close()
        await runner.cleanup()
        await server.stop()
        await engine.stop()


@pytest.mark.model  # its own CpuEngine with a 1k context
async def test_truncation_disabled_refuses_and_auto_drops_oldest_turns(small_context_gateway):
    gateway = small_context_gateway
    assert (await gateway.app[GATEWAY].service.model_info()).max_context_length == 1024
    turns = await _turns_over_context(gateway)
    async with aiohttp.ClientSession() as session:
        body = {"model": "default", "input": turns, "max_output_tokens": 16, "temperature": 0}
        async with session.post(gateway.base_url + "/responses", json=body) as r:
            err = await r.json()
            assert r.status == 400 and err["error"]["code"] == "context_length_exceeded"
    resp = await gateway.client.responses.create(model="default", input=turns, truncation="auto",
                                                 max_output_tokens=16, temperature=0)
    assert resp.truncation == "auto" and resp.status in ("completed", "incomplete")
    last_turn_only = await gateway.client.responses.input_tokens.count(model="default", input=turns[-1:])
    # only the last turn survives; the model's default system prompt (if any) is unaffected
    assert resp.usage.input_tokens == last_turn_only.input_tokens
    counted = await gateway.client.responses.input_tokens.count(model="default", input=turns, truncation="auto",
                                                                extra_body={"max_output_tokens": 16})
    assert counted.input_tokens == resp.usage.input_tokens
