"""A replica whose engine dies leaves the gateway's rotation, and clients do not see it.

Two in-process services behind one in-process gateway. Replica A's engine dies: the fake
TensorRT-LLM executor is shut down (``GenerationExecutor.shutdown``), or the CPU engine's
decode loop is killed (llama.cpp's decode raises, the loop ends). A's gRPC health turns
NOT_SERVING and its Generate answers UNAVAILABLE, so the gateway, which still believes A
healthy (its probe interval is long on purpose), retries each request routed to A on B
before the first token, and takes A out of rotation at once. Every client gets a 200.
"""
from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import fake_trtllm, write_checkpoint
from tests.fixtures.gateway import start_gateway
from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import until
from trtllm_service.engine.base import EngineError, SamplingConfig
from trtllm_service.engine.cpu import CpuEngine
from trtllm_service.engine.trtllm import TrtllmEngine
from trtllm_service.settings import ServiceSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")
BODY = {"model": "default", "input": "Say hello.", "max_output_tokens": 16, "temperature": 0}


async def _trtllm_pair(tmp_path):
    engines = []
    for name in ("a", "b"):
        engine = TrtllmEngine(ServiceSettings(engine="trtllm", model=str(write_checkpoint(tmp_path / name / "Tiny"))))
        await engine.start()
        engines.append(engine)

    async def kill(engine: TrtllmEngine) -> None:
        engine._llm._executor.shutdown()  # the executor died under the LLM (upstream: is_shutdown())
    return engines, kill


async def _cpu_pair(tmp_path):
    engines = [CpuEngine(ServiceSettings(cpu_kv_tokens=1024, max_batch_size=2)) for _ in range(2)]
    for engine in engines:
        await engine.start()

    async def kill(engine: CpuEngine) -> None:
        def broken(*_args):
            raise RuntimeError("simulated llama.cpp failure")
        engine.runtime.decode = broken
        with pytest.raises(EngineError):
            async for _ in engine.generate("victim", [1, 2, 3], SamplingConfig(max_tokens=4)):
                pass
    return engines, kill


@pytest_asyncio.fixture(params=["trtllm", pytest.param("cpu", marks=pytest.mark.model)], loop_scope="session")
async def pair(request, tmp_path):
    if request.param == "trtllm":
        with fake_trtllm():
            engines, kill = await _trtllm_pair(tmp_path)
            yield engines, kill
            for engine in engines:
                await engine.stop()
        return
    engines, kill = await _cpu_pair(tmp_path)
    yield engines, kill
    for engine in engines:
        await engine.stop()


async def _metrics(root: str) -> dict[tuple[str, str], float]:
    async with aiohttp.ClientSession() as s, s.get(root + "/metrics") as r:
        text = await r.text()
    return {(x.name, x.labels["replica"]): x.value for family in text_string_to_metric_families(text)
            for x in family.samples if "replica" in x.labels}


async def _create(base_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(base_url + "/responses", json=BODY) as r:
        body = await r.json()
    assert r.status == 200 and body["status"] in ("completed", "incomplete"), body
    return r.status


async def test_dead_engine_is_ejected_and_requests_move_before_the_first_token(pair, tmp_path):
    (engine_a, engine_b), kill = pair
    a, b = await serve_in_process(engine_a), await serve_in_process(engine_b)
    handle, runner = await start_gateway(f"{a.address},{b.address}", tmp_path, load_poll_interval_s=600)
    channel = grpc.aio.insecure_channel(a.address)
    try:
        await _create(handle.base_url)  # both replicas in rotation, model info cached
        await kill(engine_a)
        health = health_pb2_grpc.HealthStub(channel)

        async def not_serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest())
            return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await until(not_serving, timeout=10)

        before = await _metrics(handle.root)
        assert before[("trtllm_gateway_replica_healthy", a.address)] == 1  # the gateway has not probed yet
        await asyncio.gather(*(_create(handle.base_url) for _ in range(4)))  # least-outstanding: 2 go to A
        after = await _metrics(handle.root)
        retried = after[("trtllm_gateway_upstream_retries_total", a.address)] - before.get(
            ("trtllm_gateway_upstream_retries_total", a.address), 0)
        assert retried >= 1
        assert after[("trtllm_gateway_replica_healthy", a.address)] == 0  # out of rotation at once

        await asyncio.gather(*(_create(handle.base_url) for _ in range(3)))
        final = await _metrics(handle.root)
        sent = ("trtllm_gateway_upstream_requests_total", a.address)
        assert final[sent] == after[sent]  # nothing more goes to A
    finally:
        await channel.close()
        await handle.client.close()
        await runner.cleanup()
        await a.stop()
        await b.stop()
