"""``/metrics`` over real HTTP (issue 14, defects 15 and 17).

* Its replica series name the service's addresses: with ``--metrics-api-key`` the endpoint
  needs that key (tenants' API keys do not open it); without it, it stays public.
* A client that leaves mid-stream is counted as status 499, never 200, also when the
  gateway notices it from a failed write before aiohttp cancels the handler.
"""
from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
import pytest_asyncio

from tests.fixtures.gateway import start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import read_until_seen

METRICS_KEY = "mk-secret"
TENANT_KEY = "sk-tenant"
DISCONNECTS = 60  # about one in ten used to count as 200 (RST while a write was due)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    """(gateway with a metrics key, gateway without) over a service that talks for long."""
    engine = ScriptedEngine(tokenizer, "word " * 4000, model_id="scripted-metrics", step_delay=0.0005)
    server = await serve_in_process(engine)
    keyed, keyed_runner = await start_gateway(server.address, tmp_path_factory.mktemp("metrics-keyed"),
                                              metrics_api_key=METRICS_KEY, api_keys=(TENANT_KEY,))
    public, public_runner = await start_gateway(server.address, tmp_path_factory.mktemp("metrics-public"))
    yield keyed, public
    for handle, runner in ((keyed, keyed_runner), (public, public_runner)):
        await handle.client.close()
        await runner.cleanup()
    await server.stop()


async def _metrics(handle, key: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(handle.root + "/metrics", headers=headers) as r:
            return r.status, await r.text()


@pytest.mark.parametrize("key", [None, "wrong", TENANT_KEY])
async def test_metrics_key_guards_the_endpoint(stack, key):
    keyed, _ = stack
    status, text = await _metrics(keyed, key)
    assert status == 401, text
    err = json.loads(text)["error"]
    assert (err["type"], err["code"]) == ("authentication_error", "invalid_api_key")
    assert "127.0.0.1" not in text


async def test_metrics_key_opens_the_endpoint_and_public_stays_public(stack):
    keyed, public = stack
    for handle, key in ((keyed, METRICS_KEY), (public, None)):
        status, text = await _metrics(handle, key)
        assert status == 200 and "trtllm_gateway_replica_healthy" in text


async def _leave_mid_stream(handle) -> None:
    """Start a stream, read until text flows, then vanish with a reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(handle.root.rsplit(":", 1)[1]))
    body = json.dumps({"model": "default", "input": "talk", "stream": True}).encode()
    writer.write(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await read_until_seen(reader, b"response.output_text.delta")
    writer.transport.abort()


def _count(text: str, status: str) -> float:
    pattern = rf'trtllm_gateway_http_requests_total\{{method="POST",route="/v1/responses",status="{status}"\}} (\S+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_clients_that_leave_mid_stream_count_as_499(stack):
    _, public = stack
    for _ in range(DISCONNECTS):
        await _leave_mid_stream(public)
    for _ in range(600):  # each handler records its status when it has wound down
        text = (await _metrics(public))[1]
        if _count(text, "499") + _count(text, "200") >= DISCONNECTS:
            break
        await asyncio.sleep(0.05)
    assert (_count(text, "499"), _count(text, "200")) == (DISCONNECTS, 0)
