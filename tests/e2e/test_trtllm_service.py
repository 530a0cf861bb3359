"""The real service, started as `trtllm-responses-service --engine trtllm`, over the fake
tensorrt_llm (put on the child's PYTHONPATH): Generate, structured output, logprobs,
cancellation, GetLoad fed by the stats poller, one openai-SDK round trip through the real
gateway, and the exit code when TensorRT-LLM cannot run."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from tests.fakes import subprocess_env, write_checkpoint
from tests.fixtures.gateway import start_gateway
from tests.fixtures.service import spawn_service
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

SENTENCE = "The quick brown fox jumps over the lazy dog."  # what the fake generates


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # a long context, so that ignore_eos streams run until they are cancelled
    return write_checkpoint(tmp_path_factory.mktemp("trtllm") / "Tiny-Chat", max_position_embeddings=32768)


@pytest.fixture(scope="module")
def trtllm_service(checkpoint, tmp_path_factory):
    proc = spawn_service(tmp_path_factory.mktemp("trtllm-logs"), "--engine", "trtllm", "--model", str(checkpoint),
                         "--max-batch-size", "2", "--log-format", "text",
                         env=subprocess_env(TRTLLM_FAKE_STEP_S="0.005"))
    yield proc
    assert proc.stop() == 0, proc.log_path.read_text()[-3000:]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(trtllm_service):
    channel = grpc.aio.insecure_channel(trtllm_service.address)
    yield pb_grpc.InferenceServiceStub(channel)
    await channel.close()


def chat(text: str, **sampling) -> pb.GenerateRequest:
    request = pb.GenerateRequest(sampling=pb.SamplingParams(**sampling), return_token_ids=True)
    request.chat.messages.add(role="user").content.add(text=text)
    return request


async def collect(stub, request):
    deltas, final = [], None
    async for msg in stub.Generate(request):
        if msg.HasField("delta"):
            deltas.append(msg.delta)
        else:
            final = msg.final
    return deltas, final


async def test_model_info_comes_from_tensorrt_llm(stub):
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert (info.engine, info.model_id, info.max_context_length) == ("trtllm", "Tiny-Chat", 32768)
    assert info.capabilities.structured_output and info.capabilities.logprobs


async def test_generate_streams_text_and_usage(stub):
    request = chat("Say something.", max_tokens=40)
    deltas, final = await collect(stub, request)
    assert "".join(d.text for d in deltas) == SENTENCE
    assert final.finish_reason == pb.FINISH_REASON_STOP
    counted = await stub.CountTokens(pb.CountTokensRequest(chat=request.chat))
    assert final.usage.prompt_tokens == counted.input_tokens > 0
    assert final.usage.completion_tokens == sum(len(d.token_ids) for d in deltas) == 10


async def test_max_tokens_and_logprobs(stub):
    deltas, final = await collect(stub, chat("Hi", max_tokens=3, logprobs=True, top_logprobs=2))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH and final.usage.completion_tokens == 3
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert len(logprobs) == 3 and all(len(lp.top_logprobs) == 2 for lp in logprobs)


async def test_structured_output_reaches_the_engine(stub):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = chat("Where?", max_tokens=40)
    request.response_format.json_schema.CopyFrom(pb.JsonSchemaFormat(name="where", schema_json=json.dumps(schema)))
    deltas, final = await collect(stub, request)
    assert json.loads("".join(d.text for d in deltas)) == {"city": "fake"}


async def test_cancelled_calls_free_their_slots(stub):
    async def run_until_cancelled(i, started):
        async for _ in stub.Generate(chat(f"Story {i}", max_tokens=30000, ignore_eos=True)):
            started.set()

    events = [asyncio.Event() for _ in range(3)]
    tasks = [asyncio.create_task(run_until_cancelled(i, e)) for i, e in enumerate(events)]
    try:
        # any two: the three are templated on worker threads, so they may reach the engine in any order
        deadline = asyncio.get_running_loop().time() + 60
        while sum(e.is_set() for e in events) < 2:
            assert asyncio.get_running_loop().time() < deadline, "two of three streams never started"
            await asyncio.sleep(0.01)
        load = await wait_for_load(stub, lambda load: load.running == 2 and load.queued == 1, "2 running, 1 queued")
        assert load.max_running == 2 and load.kv_cache_utilization > 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await wait_for_load(stub, lambda load: load.running == 0 and load.queued == 0, "idle after cancelling")
    _, final = await collect(stub, chat("Still there?", max_tokens=2))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH


async def wait_for_load(stub, predicate, what, limit_s=30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        load = await stub.GetLoad(pb.GetLoadRequest())
        if predicate(load):
            return load
        if loop.time() > deadline:
            pytest.fail(f"GetLoad never showed {what}; last: {load}")
        await asyncio.sleep(0.1)


async def test_openai_sdk_through_the_gateway(trtllm_service, tmp_path):
    handle, runner = await start_gateway(trtllm_service.address, tmp_path)
    try:
        response = await handle.client.responses.create(model="Tiny-Chat", input="Hello!", max_output_tokens=30)
        assert response.status == "completed" and response.output_text == SENTENCE
        assert response.usage.output_tokens == 10
        stream = await handle.client.responses.create(model="Tiny-Chat", input="Hello!", stream=True,
                                                      max_output_tokens=16)
        events = [event async for event in stream]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert events[-1].type == "response.completed" and text == SENTENCE
    finally:
        await handle.client.close()
        await runner.cleanup()


@pytest.mark.parametrize("env, message", [
    (subprocess_env(TRTLLM_FAKE_DEVICE_COUNT="0"), "needs an NVIDIA GPU and none is visible"),
    ({}, "needs the tensorrt_llm package"),
])
def test_unusable_engine_exits_2_with_a_message(checkpoint, env, message):
    if not env and importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("a real tensorrt_llm is installed here")
    proc = run_service_expecting_failure(checkpoint, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: --engine trtllm {message}" in proc.stderr


def test_unusable_engine_prints_no_traceback(checkpoint):
    proc = run_service_expecting_failure(checkpoint, subprocess_env(TRTLLM_FAKE_DEVICE_COUNT="0"))
    assert "Traceback" not in proc.stderr


def run_service_expecting_failure(checkpoint, env) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("trtllm-responses-service"))
    return subprocess.run([exe, "--engine", "trtllm", "--model", str(checkpoint), "--port", "0",
                           "--metrics-port", "-1", "--log-format", "text"],
                          capture_output=True, text=True, timeout=180, env=env or None)
