"""The real TensorRT-LLM engine behind the Engine contract and the real service: streaming,
cancellation, usage, structured output, logprobs and the load/metrics figures."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import pytest_asyncio

from trtllm_service.engine.base import GuidedDecoding, SamplingConfig
from trtllm_service.settings import ServiceSettings

pytestmark = pytest.mark.gpu
LONG = SamplingConfig(max_tokens=2048, ignore_eos=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(model_dir):
    from trtllm_service.engine.trtllm import TrtllmEngine

    engine = TrtllmEngine(ServiceSettings(engine="trtllm", model=model_dir, max_batch_size=8,
                                          kv_cache_free_gpu_memory_fraction=0.5))
    engine.stats_timeout_s, engine.stats_pause_s = 0.5, 0.1
    await engine.start()
    yield engine
    await engine.stop()


def prompt(engine, text: str) -> list[int]:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)


async def run(engine, ids, sampling, request_id="gpu"):
    return [step async for step in engine.generate(request_id, ids, sampling)]


async def until(predicate, what, limit_s=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"never reached: {what}")
        await asyncio.sleep(0.05)


async def test_started_from_the_checkpoint(engine, model_dir):
    assert engine.health() and engine.max_context_length > 0
    assert engine.tokenizer.chat_template


async def test_stream_tokens_and_finish(engine):
    steps = await run(engine, prompt(engine, "Name three colours."), SamplingConfig(max_tokens=48, temperature=0))
    ids = [t for s in steps for t in s.token_ids]
    assert ids and engine.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert steps[-1].finish_reason in ("stop", "length") and all(s.finish_reason is None for s in steps[:-1])
    if steps[-1].finish_reason == "length":
        assert len(ids) == 48
    else:
        assert steps[-1].stop_token_id is not None and steps[-1].stop_token_id not in ids


async def test_max_tokens_is_exact(engine):
    steps = await run(engine, prompt(engine, "Tell me a long story."), SamplingConfig(max_tokens=7, ignore_eos=True))
    assert sum(len(s.token_ids) for s in steps) == 7 and steps[-1].finish_reason == "length"


async def test_close_aborts_and_frees_the_slot(engine):
    stream = engine.generate("gpu-cancel", prompt(engine, "Count to a million."), LONG)
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    await until(lambda: engine.load().running == 0, "no running request after the abort")
    steps = await run(engine, prompt(engine, "Hi"), SamplingConfig(max_tokens=4))
    assert steps[-1].finish_reason in ("stop", "length")


async def test_structured_output_matches_the_schema(engine):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    guided = GuidedDecoding(json_schema=json.dumps(schema))
    steps = await run(engine, prompt(engine, "Describe Paris as JSON."),
                      SamplingConfig(max_tokens=128, temperature=0, guided=guided))
    value = json.loads(engine.tokenizer.decode([t for s in steps for t in s.token_ids], skip_special_tokens=True))
    assert set(value) == {"city", "population"} and isinstance(value["population"], int)


async def test_logprobs(engine):
    steps = await run(engine, prompt(engine, "Say yes."), SamplingConfig(max_tokens=5, logprobs=3, temperature=0))
    pairs = [(t, lp) for s in steps for t, lp in zip(s.token_ids, s.logprobs, strict=True)]
    assert pairs
    for token, lp in pairs:
        assert lp.token_id == token and lp.logprob <= 0 and len(lp.top) == 3


async def test_load_reflects_running_requests(engine):
    streams = [engine.generate(f"gpu-load-{i}", prompt(engine, f"Story {i}"), LONG) for i in range(3)]
    tasks = [asyncio.create_task(drain(s)) for s in streams]
    try:
        await until(lambda: engine.load().running >= 1, "running requests in load()")
        assert engine.load().kv_cache_utilization > 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: engine.load().running == 0, "idle load()")


async def test_service_metrics_and_usage(engine):
    import grpc

    from trtllm_responses.inference.v1 import inference_pb2 as pb
    from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc
    from trtllm_service.server import InferenceServer

    server = InferenceServer(ServiceSettings(engine="trtllm", host="127.0.0.1", port=0, metrics_port=0,
                                             max_batch_size=8, log_format="text"), engine)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            request = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=16, temperature=0),
                                         return_token_ids=True)
            request.chat.messages.add(role="user").content.add(text="Hello!")
            ids, final = [], None
            async for msg in stub.Generate(request):
                if msg.HasField("delta"):
                    ids.extend(msg.delta.token_ids)
                else:
                    final = msg.final
            counted = await stub.CountTokens(pb.CountTokensRequest(chat=request.chat))
            assert final.usage.prompt_tokens == counted.input_tokens and final.usage.completion_tokens == len(ids)
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        for name in ("trtllm:time_to_first_token_seconds", "trtllm:num_requests_running", "trtllm:kv_cache_usage_perc"):
            assert name in body
    finally:
        await server.stop()


async def drain(stream):
    async for _ in stream:
        pass
