"""The real grpc.aio service over the real CPU engine and default model."""
from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from trtllm_responses.inference.v1 import inference_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")


def chat_request(text: str, max_tokens: int | None = 24, **sampling) -> pb.GenerateRequest:
    chat = pb.Chat()
    chat.messages.add(role="user").content.add(text=text)
    params = pb.SamplingParams(temperature=0.0, **sampling)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    return pb.GenerateRequest(chat=chat, sampling=params, return_token_ids=True)


async def collect(stub, request):
    text, ids, final = [], [], None
    async for msg in stub.Generate(request):
        if msg.HasField("delta"):
            assert final is None, "no delta may follow the final message"
            text.append(msg.delta.text)
            ids.extend(msg.delta.token_ids)
        else:
            final = msg.final
    assert final is not None, "every stream ends with a Final"
    return "".join(text), ids, final


async def test_stream_text_equals_decoded_tokens_and_usage(stub, tokenizer):
    request = chat_request("Name three colours.", max_tokens=40)
    text, ids, final = await collect(stub, request)
    assert text and text == tokenizer.decode(ids, skip_special_tokens=True)
    counted = await stub.CountTokens(pb.CountTokensRequest(chat=request.chat))
    assert final.usage.prompt_tokens == counted.input_tokens > 0
    assert final.usage.completion_tokens == len(ids)
    assert final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)


async def test_max_tokens_gives_length(stub):
    text, ids, final = await collect(stub, chat_request("Write a long story about a dragon.", max_tokens=5))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH
    assert final.usage.completion_tokens == len(ids) == 5


async def test_stop_string_cuts_output(stub):
    prompt = "Describe a sunny day at the beach."
    full, _, _ = await collect(stub, chat_request(prompt, max_tokens=40))
    assert len(full) > 20, full
    stop = full[len(full) // 2: len(full) // 2 + 3]  # greedy: the same text comes out again
    text, _, final = await collect(stub, chat_request(prompt, max_tokens=40, stop=[stop]))
    assert final.finish_reason == pb.FINISH_REASON_STOP and final.matched_stop == stop
    assert text == full[: full.index(stop)] and stop not in text


async def test_eight_concurrent_streams_are_decoded_together(stub):
    """Continuous batching, shown without timing: the engine runs several of the eight at once
    (throughput figures belong to scripts/bench_*.py, not to assertions)."""
    requests = [chat_request(f"Tell me fact number {i} about cats.", max_tokens=32, ignore_eos=True)
                for i in range(8)]
    done = asyncio.ensure_future(asyncio.gather(*(collect(stub, r) for r in requests)))
    peak = 0
    while not done.done():
        peak = max(peak, (await stub.GetLoad(pb.GetLoadRequest())).running)
        await asyncio.sleep(0.01)
    results = await done
    assert all(final.usage.completion_tokens == 32 for _, _, final in results)
    assert peak >= 2


async def _metric(url: str, name: str, label: str) -> float:
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
    for line in body.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_cancel_aborts_engine_request(stub, service):
    metric = "trtllm:requests_finished_total"
    before = await _metric(service.metrics_url, metric, 'finished_reason="cancelled"')
    call = stub.Generate(chat_request("Write a very long essay about the sea.", max_tokens=400, ignore_eos=True))
    async for msg in call:
        if msg.HasField("delta") and msg.delta.text:
            break
    assert (await stub.GetLoad(pb.GetLoadRequest())).running >= 1
    call.cancel()
    for _ in range(100):
        if (await stub.GetLoad(pb.GetLoadRequest())).running == 0:
            break
        await asyncio.sleep(0.05)
    assert (await stub.GetLoad(pb.GetLoadRequest())).running == 0
    await asyncio.sleep(0.1)
    assert await _metric(service.metrics_url, metric, 'finished_reason="cancelled"') == before + 1


def _chat(*messages):
    chat = pb.Chat()
    for role, text in messages:
        chat.messages.add(role=role).content.add(text=text)
    return chat


@pytest.mark.parametrize("request_, needle", [
    (pb.GenerateRequest(chat=pb.Chat()), "messages must not be empty"),
    (pb.GenerateRequest(chat=_chat(("wizard", "hi"))), "role"),
    (pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParams(max_tokens=10**6)), "exceeds the model's context"),
    (pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParams(temperature=-1.0)), "temperature"),
    (pb.GenerateRequest(prompt="word " * 8000, sampling=pb.SamplingParams(max_tokens=1000)), "context length"),
])
async def test_bad_requests_are_invalid_argument(stub, request_, needle):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub, request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()


async def test_context_overflow_carries_machine_readable_code(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub, pb.GenerateRequest(prompt="word " * 9000))
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers.get("x-error-code") == "context_length_exceeded"


async def test_health_reflection_model_info_and_metrics(service, stub):
    channel = grpc.aio.insecure_channel(service.address)
    status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
    names = set()
    async for reply in refl.ServerReflectionInfo(one()):
        names |= {s.name for s in reply.list_services_response.service}
    assert "trtllm_responses.inference.v1.InferenceService" in names and "grpc.health.v1.Health" in names
    await channel.close()

    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_id == "SmolLM2-135M-Instruct" and info.max_context_length >= 2048
    assert info.engine == "cpu" and info.capabilities.logprobs
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(service.metrics_url).read().decode())
    for name in ("trtllm:time_to_first_token_seconds_bucket", "trtllm:num_requests_running",
                 "trtllm:kv_cache_usage_perc", "grpc_server_handled_total", "trtllm:generation_tokens_total"):
        assert name in body, name


def _sample(body: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def test_queue_time_measures_the_wait_for_the_engine_not_ttft(service, stub):
    def scrape() -> str:
        return urllib.request.urlopen(service.metrics_url).read().decode()
    before = await asyncio.to_thread(scrape)
    await collect(stub, pb.GenerateRequest(prompt="Count to three.", sampling=pb.SamplingParams(max_tokens=4)))
    after = await asyncio.to_thread(scrape)
    count = "trtllm:queue_time_seconds_count"
    assert _sample(after, count) - _sample(before, count) == 1
    queued = _sample(after, "trtllm:queue_time_seconds_sum") - _sample(before, "trtllm:queue_time_seconds_sum")
    ttft = (_sample(after, "trtllm:time_to_first_token_seconds_sum")
            - _sample(before, "trtllm:time_to_first_token_seconds_sum"))
    assert 0 <= queued < ttft  # queueing precedes the prefill that the first token also waits for
