"""The CPU engine under its limits, each on an engine of its own: a KV cache too small for
every running request (preemption), and a decode loop that dies (health)."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from trtllm_service.engine.base import EngineError, SamplingConfig
from trtllm_service.engine.cpu import CpuEngine
from trtllm_service.settings import ServiceSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
    assert small_engine.health()

    def broken(*_args):
        raise RuntimeError("simulated llama.cpp failure")

    monkeypatch.setattr(small_engine.runtime, "decode", broken)
    with pytest.raises(EngineError, match="simulated llama.cpp failure"):
        await collect(small_engine, "doomed", prompt_for(small_engine, "Hi"), SamplingConfig(max_tokens=4))
    assert not small_engine.health()
    with pytest.raises(EngineError):
        await collect(small_engine, "after", prompt_for(small_engine, "Hi"), SamplingConfig(max_tokens=4))
