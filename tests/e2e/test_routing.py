"""Load-aware routing over three real service processes (real default model) behind one gateway.

(a) 60 short requests at concurrency 6 spread within ±20% of 20 per replica, read from
    ``trtllm_gateway_upstream_requests_total{replica}``;
(b) a SIGKILLed replica leaves the rotation and every later request succeeds;
(c) a request routed to a just-killed replica before its first token is retried on another.
"""
from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway import raw_stream, start_gateway
from tests.fixtures.service import spawn_service
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

SHORT = {"model": "default", "input": "Write a long story about a dragon.", "max_output_tokens": 16,
         "temperature": 0}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replicas(tmp_path_factory):
    """Three service processes, started concurrently, one torch thread each (2-core CI)."""
    logs = tmp_path_factory.mktemp("replicas")
    procs = await asyncio.gather(*(asyncio.to_thread(spawn_service, logs, "--cpu-threads", "1",
                                                     "--log-format", "text") for _ in range(3)),
                                 return_exceptions=True)
    alive = [p for p in procs if not isinstance(p, BaseException)]
    try:
        for p in procs:
            if isinstance(p, BaseException):
                raise p
        yield alive
    finally:
        for p in alive:
            p.stop(timeout=10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway3(replicas, tmp_path_factory):
    handle, runner = await start_gateway(",".join(p.address for p in replicas),
                                         tmp_path_factory.mktemp("gateway-routing"), load_poll_interval_s=0.5)
    yield handle
    await handle.client.close()
    await runner.cleanup()


async def scrape(handle) -> dict[tuple[str, str], float]:
    """{(sample name, replica): value} of the gateway's replica metrics, from GET /metrics."""
    async with aiohttp.ClientSession() as session:
        async with session.get(handle.root + "/metrics") as r:
            text = await r.text()
    return {(s.name, s.labels["replica"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if "replica" in s.labels}


def per_replica(before: dict, after: dict, name: str, addresses) -> dict[str, int]:
    return {a: int(after.get((name, a), 0) - before.get((name, a), 0)) for a in addresses}


async def create(handle, i: int) -> dict:
    """One short JSON create; asserts it finished (16 tokens: incomplete, or completed)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(handle.base_url + "/responses", json={**SHORT, "metadata": {"i": str(i)}}) as r:
            body = await r.json()
    assert r.status == 200, body
    assert body["status"] in ("completed", "incomplete") and body["output"], body
    return body


async def run_load(handle, n: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await create(handle, i)
    await asyncio.gather(*(one(i) for i in range(n)))


async def test_requests_spread_evenly_over_replicas(gateway3, replicas):
    addresses = [p.address for p in replicas]
    before = await scrape(gateway3)
    await run_load(gateway3, 60, 6)
    after = await scrape(gateway3)
    spread = per_replica(before, after, "trtllm_gateway_upstream_requests_total", addresses)
    print(f"\nrequests per replica (60 at concurrency 6): {spread}")
    assert sum(spread.values()) == 60
    assert all(16 <= n <= 24 for n in spread.values()), f"spread {spread} is not within ±20% of 20"

    async def idle() -> dict | None:
        # The estimate adds what the replica's last GetLoad counted beyond this gateway's own
        # requests; an answer taken just before the replica let a finished request go counts
        # it until the next poll (load_poll_interval_s), so wait for that poll.
        now = await scrape(gateway3)
        return now if all(now[("trtllm_gateway_replica_outstanding", a)] == 0 for a in addresses) else None
    assert await _until(idle, timeout=5.0), await scrape(gateway3)


async def _until(check, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    return await check()


async def test_killed_replica_leaves_rotation_and_requests_succeed(gateway3, replicas):
    victim = replicas[2]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    for _ in range(3):  # right after the kill: whatever hits the dead replica is retried
        status, _, final = await raw_stream(gateway3, SHORT)
        assert status == 200 and final["status"] in ("completed", "incomplete"), final

    async def out():
        return (await scrape(gateway3))[("trtllm_gateway_replica_healthy", victim.address)] == 0
    assert await _until(out), "the killed replica is still in rotation"
    before = await scrape(gateway3)
    await run_load(gateway3, 6, 3)
    after = await scrape(gateway3)
    sent = per_replica(before, after, "trtllm_gateway_upstream_requests_total", [p.address for p in replicas])
    assert sent[victim.address] == 0 and sum(sent.values()) == 6, sent
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway3.root + "/readyz") as r:
            assert r.status == 200  # two replicas still SERVING


async def test_request_on_just_killed_replica_is_retried_before_first_token(replicas, tmp_path):
    """Another client keeps replica A busy while a second gateway takes its one load sample,
    so that gateway routes its next request to B (least outstanding). B is then SIGKILLed
    before the request: it fails UNAVAILABLE before any token and must move to A."""
    a, b = replicas[0], replicas[1]
    channel = grpc.aio.insecure_channel(a.address)
    busy = pb_grpc.InferenceServiceStub(channel).Generate(pb.GenerateRequest(
        prompt="Once upon a time", sampling=pb.SamplingParams(max_tokens=2000, ignore_eos=True)))
    handle = runner = None
    try:
        await busy.read()  # the busy request is running on A
        handle, runner = await start_gateway(f"{a.address},{b.address}", tmp_path, load_poll_interval_s=600)
        seen = await scrape(handle)
        assert seen[("trtllm_gateway_replica_outstanding", a.address)] >= 1, seen  # A's load was sampled busy
        async with aiohttp.ClientSession() as session:
            async with session.get(handle.base_url + "/models") as r:  # caches model info (from B)
                assert r.status == 200
        busy.cancel()
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait()
        before = await scrape(handle)
        status, _, final = await raw_stream(handle, SHORT)
        after = await scrape(handle)
        assert status == 200 and final["status"] in ("completed", "incomplete"), final
        retries = per_replica(before, after, "trtllm_gateway_upstream_retries_total", [a.address, b.address])
        sent = per_replica(before, after, "trtllm_gateway_upstream_requests_total", [a.address, b.address])
        assert sent == {b.address: 1, a.address: 1}, sent        # tried on B, then on A
        assert retries == {b.address: 1, a.address: 0}, retries
        assert after[("trtllm_gateway_replica_healthy", b.address)] == 0
    finally:
        busy.cancel()
        await channel.close()
        if handle is not None:
            await handle.client.close()
            await runner.cleanup()
