"""TrtllmEngine start/stop, its clear start errors, the TensorRT backend, a dying executor,
and the stats poller feeding load(); all over the fake tensorrt_llm."""
from __future__ import annotations

import asyncio

import pytest

from tests.fakes import fake_trtllm, no_trtllm, write_checkpoint
from trtllm_service.engine import create_engine
from trtllm_service.engine.base import EngineError, SamplingConfig
from trtllm_service.engine.trtllm import TrtllmEngine, TrtllmUnavailable
from trtllm_service.settings import ServiceSettings

LONG = SamplingConfig(max_tokens=100_000, ignore_eos=True)


@pytest.fixture
def fake():
    with fake_trtllm() as module:
        yield module


@pytest.fixture
def model(tmp_path):
    return str(write_checkpoint(tmp_path / "Tiny-Chat", max_position_embeddings=1024))


def settings(model, **kw):
    return ServiceSettings(engine="trtllm", model=model, **kw)


async def until(predicate, what, limit_s=20.0):
    """Wait for a condition the engine reaches asynchronously; fail with `what` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"never reached: {what}")
        await asyncio.sleep(0.01)


async def test_registry_builds_it_without_importing_tensorrt_llm(model):
    with no_trtllm():
        engine = create_engine(settings(model))
        assert isinstance(engine, TrtllmEngine) and not engine.health()


async def test_missing_tensorrt_llm_is_a_clear_error(model):
    with no_trtllm():
        with pytest.raises(TrtllmUnavailable, match="needs the tensorrt_llm package") as info:
            await TrtllmEngine(settings(model)).start()
    assert info.value.exit_code == 2


@pytest.mark.parametrize("gpus, tp, message", [(0, 1, "none is visible"), (1, 2, "needs 2 GPUs; 1 visible")])
async def test_gpu_shortage_is_a_clear_error(fake, model, gpus, tp, message):
    fake._fake.CONTROLS.device_count = gpus
    with pytest.raises(TrtllmUnavailable, match=message):
        await TrtllmEngine(settings(model, tensor_parallel_size=tp)).start()
    assert fake._fake.CONTROLS.llm_kwargs == []  # refused before TensorRT-LLM was asked


@pytest.mark.parametrize("bad, message", [
    (None, "needs --model"), ("/models/x.Q4_K_M.gguf", "GGUF"), ("/no/such/dir/model", "does not exist")])
async def test_bad_model_is_a_clear_error(fake, bad, message):
    with pytest.raises(TrtllmUnavailable, match=message):
        await TrtllmEngine(settings(bad)).start()


async def test_directory_without_config_is_refused(fake, tmp_path):
    with pytest.raises(TrtllmUnavailable, match="no config.json"):
        await TrtllmEngine(settings(str(tmp_path))).start()


async def test_health_follows_the_lifecycle(fake, model):
    engine = TrtllmEngine(settings(model))
    assert not engine.health()
    await engine.start()
    assert engine.health()
    assert len(fake._fake.CONTROLS.sampling_params) == 1  # the warm-up generation
    assert fake._fake.CONTROLS.sampling_params[0].max_tokens == 1
    await engine.stop()
    assert not engine.health()
    with pytest.raises(EngineError, match="not running"):
        await anext(engine.generate("late", [1, 2], SamplingConfig(max_tokens=2)))


async def test_stop_cancels_running_streams(fake, model):
    engine = TrtllmEngine(settings(model))
    engine.abort_wait_s = 0.2  # nobody reads the stream while stop() waits for it
    await engine.start()
    stream = engine.generate("running", [1, 2, 3], LONG)
    await anext(stream)
    await engine.stop()
    last = None
    async for step in stream:
        last = step
    assert last is not None and last.finish_reason == "cancelled"


async def test_tensorrt_backend_serves_an_engine_dir(fake, tmp_path):
    engine_dir = write_checkpoint(tmp_path / "tiny-engine", max_position_embeddings=256, engine=True)
    engine = TrtllmEngine(settings(str(engine_dir), trtllm_backend="tensorrt", max_batch_size=4))
    await engine.start()
    try:
        kwargs = fake._fake.CONTROLS.llm_kwargs[-1]
        assert "enable_iter_perf_stats" not in kwargs  # _TrtLLM would refuse it
        assert type(engine._llm).__name__ == "_TrtLLM"
        assert engine.max_context_length == 256  # the engine's build_config.max_seq_len
        steps = [s async for s in engine.generate("t", [1, 2], SamplingConfig(max_tokens=3))]
        assert steps[-1].finish_reason == "length"
    finally:
        await engine.stop()


async def test_dead_executor_fails_requests_and_health(fake, model):
    engine = TrtllmEngine(settings(model))
    await engine.start()
    fake._fake.CONTROLS.die_after_tokens = 1
    with pytest.raises(EngineError, match="injected executor failure"):
        async for _ in engine.generate("dies", [1, 2, 3], SamplingConfig(max_tokens=10)):
            pass
    assert not engine.health()
    with pytest.raises(EngineError, match="shutting down"):
        await anext(engine.generate("after", [1, 2], SamplingConfig(max_tokens=2)))
    await engine.stop()


async def test_stats_poller_feeds_load(fake, model):
    engine = TrtllmEngine(settings(model, max_batch_size=2))
    engine.stats_timeout_s, engine.stats_pause_s = 0.2, 0.02
    await engine.start()
    assert engine.load().max_running == 2
    prompt = list(range(10, 110))  # 100 tokens: three full KV blocks of 32 to reuse
    streams = [engine.generate(f"s{i}", prompt, LONG) for i in range(3)]
    tasks = [asyncio.create_task(drain(s)) for s in streams]
    try:
        await until(lambda: (engine.load().running, engine.load().queued) == (2, 1), "2 running, 1 queued")
        load = engine.load()
        assert 0 < load.kv_cache_utilization < 1
        assert load.kv_cache_hit_rate > 0  # the second request reused the first one's prompt blocks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: engine.load().running == 0 and engine.load().queued == 0, "idle again")
    assert engine.load().kv_cache_utilization == 0
    await engine.stop()


async def drain(stream):
    async for _ in stream:
        pass


async def test_the_pytorch_executor_takes_the_stream_interval(fake, model):
    engine = TrtllmEngine(settings(model, stream_interval=4))
    await engine.start()  # the fake refuses LLM arguments upstream's TorchLlmArgs does not have
    try:
        assert fake._fake.CONTROLS.llm_kwargs[-1]["stream_interval"] == 4
    finally:
        await engine.stop()
