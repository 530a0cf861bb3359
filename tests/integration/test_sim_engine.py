"""The simulator engine through the real gRPC service (in-process, port 0): text, finishes,
tool calls and reasoning read by the service's own parsers, model info, slots and load,
cancellation, determinism."""
from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from tests.fixtures.sim import sim_server
from tests.fixtures.waiting import until
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

WEATHER = pb.Tool(name="get_weather", description="Weather in a city", parameters_json=json.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
     "required": ["city", "days"]}))


def request(text: str = "Hello", max_tokens: int | None = None, tools: tuple[pb.Tool, ...] = (),
            **sampling) -> pb.GenerateRequest:
    chat = pb.Chat(tools=list(tools))
    chat.messages.add(role="user").content.add(text=text)
    params = pb.SamplingParams(**sampling)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    return pb.GenerateRequest(chat=chat, sampling=params, return_token_ids=True)


async def collect(address: str, req: pb.GenerateRequest) -> tuple[list[pb.Delta], pb.Final]:
    async with grpc.aio.insecure_channel(address) as channel:
        deltas, final = [], None
        async for msg in pb_grpc.InferenceServiceStub(channel).Generate(req):
            if msg.HasField("delta"):
                deltas.append(msg.delta)
            else:
                final = msg.final
    assert final is not None
    return deltas, final


async def load(address: str) -> pb.Load:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.InferenceServiceStub(channel).GetLoad(pb.GetLoadRequest())


async def test_text_answer_is_the_configured_length_and_stops(sim_service, tokenizer):
    deltas, final = await collect(sim_service.address, request(temperature=0))
    ids = [i for d in deltas for i in d.token_ids]
    text = "".join(d.text for d in deltas)
    assert final.finish_reason == pb.FINISH_REASON_STOP
    assert final.usage.completion_tokens == len(ids) == 32
    assert text == tokenizer.decode(ids, skip_special_tokens=True) and text.strip()


async def test_max_tokens_below_the_answer_is_length(sim_service):
    deltas, final = await collect(sim_service.address, request(max_tokens=5))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH
    assert final.usage.completion_tokens == sum(len(d.token_ids) for d in deltas) == 5


async def test_ignore_eos_runs_to_max_tokens(sim_service):
    _, final = await collect(sim_service.address, request(max_tokens=100, ignore_eos=True))
    assert (final.finish_reason, final.usage.completion_tokens) == (pb.FINISH_REASON_LENGTH, 100)


async def test_stop_token_id_ends_the_answer_there(sim_service):
    deltas, _ = await collect(sim_service.address, request(seed=7))
    ids = [i for d in deltas for i in d.token_ids]
    deltas, final = await collect(sim_service.address, request(seed=7, stop_token_ids=[ids[10]]))
    assert final.finish_reason == pb.FINISH_REASON_STOP
    assert [i for d in deltas for i in d.token_ids] == ids[:ids.index(ids[10])]


async def test_seed_makes_the_output_deterministic(sim_service):
    texts = []
    for seed in (3, 3, 4):
        deltas, _ = await collect(sim_service.address, request(seed=seed, temperature=1.0))
        texts.append("".join(d.text for d in deltas))
    assert texts[0] == texts[1] != texts[2]


async def test_offered_tool_is_called_with_schema_arguments(sim_service):
    deltas, final = await collect(sim_service.address, request("Weather in Paris?", tools=(WEATHER,)))
    pieces = [p for d in deltas for p in d.tool_calls]
    assert final.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert pieces[0].name == "get_weather" and pieces[0].id.startswith("call_")
    assert {p.index for p in pieces} == {0} and not any(p.error for p in pieces)
    assert json.loads("".join(p.arguments_delta for p in pieces)) == {"city": "sim", "days": 1}
    assert not "".join(d.text for d in deltas).strip()


async def test_tool_choice_none_answers_with_text(sim_service):
    req = request(tools=(WEATHER,))
    req.chat.tool_choice.mode = pb.ToolChoice.MODE_NONE
    deltas, final = await collect(sim_service.address, req)
    assert final.finish_reason == pb.FINISH_REASON_STOP
    assert not any(d.tool_calls for d in deltas) and "".join(d.text for d in deltas).strip()


async def test_model_info_says_sim_and_counts_tokens(sim_service):
    async with grpc.aio.insecure_channel(sim_service.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        counted = await stub.CountTokens(pb.CountTokensRequest(chat=request("Count me").chat))
    assert (info.engine, info.model_id, info.tool_parser) == ("sim", "SmolLM2-135M-Instruct", "hermes")
    assert not info.capabilities.structured_output and not info.capabilities.logprobs
    _, final = await collect(sim_service.address, request("Count me"))
    assert final.usage.prompt_tokens == counted.input_tokens > 0


async def test_reasoning_goes_inside_the_parsers_markup():
    async with sim_server(reasoning_parser="think", sim_reasoning_tokens=12, sim_output_tokens=6,
                          metrics_port=-1) as running:
        deltas, final = await collect(running.address, request())
    reasoning = "".join(d.reasoning_text for d in deltas)
    text = "".join(d.text for d in deltas)
    assert reasoning.strip() and text.strip() and "think>" not in reasoning + text
    assert final.usage.reasoning_tokens > 0


async def test_slots_bound_running_requests_and_cancelling_frees_them():
    async with sim_server(sim_ttft_ms=3_600_000, max_batch_size=2, max_queue=8, metrics_port=-1) as running:
        channel = grpc.aio.insecure_channel(running.address)
        stub = pb_grpc.InferenceServiceStub(channel)
        calls, tasks = [], []

        async def start(n: int, expect_running: int, expect_queued: int) -> pb.Load:
            for _ in range(n):
                calls.append(stub.Generate(request(f"request {len(calls)}")))
                tasks.append(asyncio.create_task(_drain(calls[-1])))
            return await _settle(running.address, expect_running, expect_queued)

        seen = await start(2, 2, 0)
        assert (seen.running, seen.queued, seen.max_running) == (2, 0, 2)
        seen = await start(1, 2, 1)
        assert (seen.running, seen.queued) == (2, 1)
        calls[2].cancel()  # the waiting one leaves the queue
        seen = await _settle(running.address, 2, 0)
        assert (seen.running, seen.queued) == (2, 0)
        seen = await start(1, 2, 1)
        assert (seen.running, seen.queued) == (2, 1)
        calls[0].cancel()  # a running one frees its slot for the waiting one
        seen = await _settle(running.address, 2, 0)
        assert (seen.running, seen.queued) == (2, 0)
        for call in calls:
            call.cancel()
        seen = await _settle(running.address, 0, 0)
        assert (seen.running, seen.queued) == (0, 0)
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()


async def test_a_full_queue_is_resource_exhausted():
    async with sim_server(sim_ttft_ms=3_600_000, max_batch_size=1, max_queue=1, metrics_port=-1) as running:
        channel = grpc.aio.insecure_channel(running.address)
        stub = pb_grpc.InferenceServiceStub(channel)
        waiting = [stub.Generate(request(f"request {i}")) for i in range(2)]
        tasks = [asyncio.create_task(_drain(call)) for call in waiting]
        seen = await _settle(running.address, 1, 1)
        assert (seen.running, seen.queued) == (1, 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(running.address, request("one too many"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in waiting:
            call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()


async def _drain(call) -> None:
    async for _ in call:
        pass


async def _settle(address: str, running: int, queued: int) -> pb.Load:
    """The service's load once it shows `running` and `queued` (or the last one seen)."""
    async def matching() -> pb.Load | None:
        seen = await load(address)
        return seen if (seen.running, seen.queued) == (running, queued) else None
    return await until(matching) or await load(address)


async def test_engine_refuses_beyond_its_queue_and_stop_ends_every_request():
    from trtllm_service.engine.base import EngineError, EngineOverloaded, SamplingConfig
    from trtllm_service.engine.sim import SimEngine
    from trtllm_service.settings import ServiceSettings

    engine = SimEngine(ServiceSettings(engine="sim", sim_ttft_ms=0, sim_tokens_per_s=1, max_batch_size=1,
                                       max_queue=1))
    await engine.start()
    sampling = SamplingConfig(max_tokens=100, ignore_eos=True)
    running, waiting, refused = (engine.generate(f"r{i}", [1, 2, 3], sampling) for i in range(3))
    first = await anext(running)
    queued = asyncio.create_task(anext(waiting))
    await until(lambda: _true(engine.load().queued == 1))
    with pytest.raises(EngineOverloaded):
        await anext(refused)
    await engine.stop()
    assert first.token_ids and (await anext(running)).finish_reason == "cancelled"
    with pytest.raises(EngineError, match="stopping"):
        await queued
    await running.aclose()
    assert (engine.load().running, engine.load().queued, engine.health()) == (0, 0, False)


async def _true(value: bool) -> bool:
    return value
