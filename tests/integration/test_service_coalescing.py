"""Service-side coalescing (pipeline.py, coalesce.py) through the real gRPC service over the
simulator engine: a consumer that falls behind gets several tokens per Delta, and merging
never changes what the stream says."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

# A small HTTP/2 window (no BDP growth): the service can have about 1 KiB in flight to this
# client, so a client that reads slowly holds the service's writes back.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


def long_request() -> pb.GenerateRequest:
    chat = pb.Chat()
    chat.messages.add(role="user").content.add(text="Tell me everything.")
    params = pb.SamplingParams(max_tokens=600, ignore_eos=True, seed=11)
    return pb.GenerateRequest(chat=chat, sampling=params, return_token_ids=True)


async def read(address: str, pause: float) -> tuple[list[pb.Delta], pb.Final]:
    deltas, final = [], None
    async with grpc.aio.insecure_channel(address, options=SMALL_WINDOW) as channel:
        async for msg in pb_grpc.InferenceServiceStub(channel).Generate(long_request()):
            if msg.HasField("final"):
                final = msg.final
                continue
            deltas.append(msg.delta)
            await asyncio.sleep(pause)
    assert final is not None
    return deltas, final


async def test_a_slow_consumer_gets_several_tokens_per_delta_and_the_same_text(sim_service, tokenizer):
    slow, final = await read(sim_service.address, pause=0.005)
    steady, _ = await read(sim_service.address, pause=0)
    ids = [i for d in slow for i in d.token_ids]
    text = "".join(d.text for d in slow)
    assert final.usage.completion_tokens == len(ids) == 600
    assert len(slow) < len(ids)  # messages were merged
    assert max(len(d.token_ids) for d in slow) > 1
    assert text == tokenizer.decode(ids, skip_special_tokens=True)
    assert text == "".join(d.text for d in steady)
    assert ids == [i for d in steady for i in d.token_ids]


async def test_stream_interval_sends_the_first_output_at_once_then_every_n_tokens(tokenizer):
    from tests.fixtures.sim import sim_server
    async with sim_server(stream_interval=8, sim_tokens_per_s=400) as running:  # paced: never behind
        deltas, final = await read(running.address, pause=0)
    sizes = [len(d.token_ids) for d in deltas]
    ids = [i for d in deltas for i in d.token_ids]
    assert final.usage.completion_tokens == len(ids) == 600
    assert sizes[0] < 8  # the first output did not wait for 8 tokens
    assert all(size >= 7 for size in sizes[1:-1]), sizes  # then one message per multiple of 8 tokens
    assert len(deltas) <= 600 // 8 + 2
    assert "".join(d.text for d in deltas) == tokenizer.decode(ids, skip_special_tokens=True)
