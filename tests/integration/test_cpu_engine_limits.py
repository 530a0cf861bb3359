"""The CPU engine under its limits, each on an engine of its own: a KV cache too small for
every running request (preemption), and a decode loop that dies (health)."""
from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import until
from trtllm_service.engine.base import EngineError, SamplingConfig
from trtllm_service.engine.cpu import CpuEngine
from trtllm_service.settings import ServiceSettings

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.model]  # its own engines on the real model


@pytest_asyncio.fixture(loop_scope="session")
async def small_engine():
    engine = CpuEngine(ServiceSettings(cpu_kv_tokens=512, max_batch_size=4))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def prompt_for(engine, text: str) -> list[int]:
    return list(engine.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                     add_generation_prompt=True, return_dict=False))


async def collect(engine, rid: str, prompt: list[int], sampling: SamplingConfig) -> list[int]:
    tokens: list[int] = []
    async for step in engine.generate(rid, prompt, sampling):
        tokens.extend(step.token_ids)
    return tokens


async def test_a_full_kv_cache_preempts_and_every_request_still_finishes(small_engine):
    assert small_engine.max_context_length == 512
    sampling = SamplingConfig(max_tokens=160, ignore_eos=True)
    prompts = [prompt_for(small_engine, f"Write a long story about the number {i}.") for i in range(4)]
    results = await asyncio.gather(*(collect(small_engine, f"full-{i}", p, sampling) for i, p in enumerate(prompts)))
    assert all(len(tokens) == 160 for tokens in results)  # 4 x ~200 tokens do not fit in 512 cells together
    assert small_engine._loop.stats.preemptions > 0
    assert small_engine.load().running == 0


async def test_a_dead_decode_loop_fails_requests_and_turns_health_false(small_engine, monkeypatch):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from trtllm_responses.inference.v1 import inference_pb2 as pb
    from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

    server = await serve_in_process(small_engine)
    channel = grpc.aio.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    assert small_engine.health()

    def broken(*_args):
        raise RuntimeError("simulated llama.cpp failure")

    monkeypatch.setattr(small_engine.runtime, "decode", broken)
    with pytest.raises(EngineError, match="simulated llama.cpp failure"):
        await collect(small_engine, "doomed", prompt_for(small_engine, "Hi"), SamplingConfig(max_tokens=4))
    assert not small_engine.health()
    with pytest.raises(EngineError):
        await collect(small_engine, "after", prompt_for(small_engine, "Hi"), SamplingConfig(max_tokens=4))
    # the service follows: NOT_SERVING for probes and routers, UNAVAILABLE for new work
    async def not_serving() -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest())
        return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    assert await until(not_serving, timeout=10)
    call = pb_grpc.InferenceServiceStub(channel).Generate(pb.GenerateRequest(
        prompt="Hi", sampling=pb.SamplingParams(max_tokens=4)))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call:
            pass
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()
    await server.stop()

