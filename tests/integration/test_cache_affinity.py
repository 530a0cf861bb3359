"""``prompt_cache_key`` routing over two real replicas: one key, one replica, its prefix cache reused.

Two in-process services, each over its own CPU engine (llama.cpp, the default model, with
its prefix cache), behind one in-process gateway whose probes are slow on purpose (so what
moves requests is the routing rule and the failed call, not a probe). Where each request
went is read from the gateway's ``trtllm_gateway_upstream_requests_total{replica}``; that
the replica's cache was reused, from ``usage.input_tokens_details.cached_tokens``.
Without affinity the two idle replicas tie and each request picks one at random, so "all
on one replica" would fail.
"""
from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway import start_gateway
from tests.fixtures.service import serve_in_process
from trtllm_service.engine.cpu import CpuEngine
from trtllm_service.settings import ServiceSettings

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.model]  # two CpuEngines on the real model
INSTRUCTIONS = "You are a careful assistant who answers briefly and politely. " * 24  # a shared prefix
N = 6


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engines():
    engines = [CpuEngine(ServiceSettings(cpu_kv_tokens=2048, max_batch_size=2)) for _ in range(2)]
    for engine in engines:
        await engine.start()
    yield engines
    for engine in engines:
        await engine.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def pool(engines, tmp_path):
    servers = {}
    for engine in engines:
        server = await serve_in_process(engine)
        servers[server.address] = server
    handle, runner = await start_gateway(",".join(servers), tmp_path, load_poll_interval_s=600)
    yield handle, servers
    await handle.client.close()
    await runner.cleanup()
    for server in servers.values():
        await server.stop()


async def _sent(root: str) -> dict[str, float]:
    """Generations sent to each replica so far."""
    async with aiohttp.ClientSession() as s, s.get(root + "/metrics") as r:
        text = await r.text()
    return {x.labels["replica"]: x.value for family in text_string_to_metric_families(text)
            for x in family.samples if x.name == "trtllm_gateway_upstream_requests_total"}


def _moved(replicas, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Generations each replica got in between (a replica never sent to has no series yet)."""
    return {replica: after.get(replica, 0) - before.get(replica, 0) for replica in replicas}


async def _create(handle, key: str) -> dict:
    async with aiohttp.ClientSession() as s, s.post(handle.base_url + "/responses", json={
            "model": "default", "instructions": INSTRUCTIONS, "input": "Say hi.", "max_output_tokens": 16,
            "temperature": 0, "prompt_cache_key": key}) as r:
        body = await r.json()
    assert r.status == 200 and body["status"] in ("completed", "incomplete"), body
    return body


async def test_one_key_lands_on_one_replica_and_reuses_its_prefix_cache(pool):
    handle, servers = pool
    before = await _sent(handle.root)
    bodies = [await _create(handle, "conversation-1") for _ in range(N)]
    moved = _moved(servers, before, await _sent(handle.root))
    assert sorted(moved.values()) == [0, N], moved
    assert all(b["usage"]["input_tokens_details"]["cached_tokens"] > 0 for b in bodies[1:]), \
        [b["usage"] for b in bodies]
    assert all(b["prompt_cache_key"] == "conversation-1" for b in bodies)


async def test_with_the_keys_replica_gone_its_requests_go_to_the_other(pool):
    handle, servers = pool
    before = await _sent(handle.root)
    await _create(handle, "conversation-2")
    owner = next(replica for replica, n in _moved(servers, before, await _sent(handle.root)).items() if n)
    other = next(replica for replica in servers if replica != owner)
    await servers[owner].stop()

    before = await _sent(handle.root)
    for _ in range(N):
        await _create(handle, "conversation-2")  # every client gets its answer
    moved = _moved(servers, before, await _sent(handle.root))
    # the first call still tried the owner (no probe has run), failed before any output and
    # moved; it took the owner out of rotation, so the rest went straight to the other
    assert moved == {owner: 1, other: N}, moved
