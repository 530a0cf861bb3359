"""Undecodable request bytes at the service's gRPC API (issue 14, defect 16).

A raw channel sends bytes that are no protobuf message to each method of the real
``InferenceServer`` (over the scripted engine): the answer is INVALID_ARGUMENT naming the
problem, as for any other bad request, not UNKNOWN. Valid bytes still work.
"""
from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from trtllm_responses.inference.v1 import inference_pb2 as pb

SERVICE = "/trtllm_responses.inference.v1.InferenceService/"
GARBAGE = [
    pytest.param(b"\x0a\xff\xff\xff\xff\x0f", id="length-past-the-end"),
    pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", id="varint-too-long"),
    pytest.param(b"\x0b", id="unterminated-group"),
    pytest.param(b"\xfb\x01" * 300 + b"\xfc\x01" * 300, id="groups-nested-300-deep"),
    pytest.param(b"\x0a\x01\xff", id="string-not-utf8"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def channel(tokenizer):
    server = await serve_in_process(ScriptedEngine(tokenizer, "ok", model_id="scripted-bytes"))
    chan = grpc.aio.insecure_channel(server.address)
    yield chan
    await chan.close()
    await server.stop()


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_undecodable_generate_is_invalid_argument(channel, garbage):
    call = channel.unary_stream(SERVICE + "Generate")(garbage)  # no serializer: the bytes go as they are
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert "decode" in info.value.details()


@pytest.mark.parametrize("method", ["CountTokens", "GetModelInfo", "GetLoad"])
async def test_undecodable_unary_is_invalid_argument(channel, method):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(SERVICE + method)(b"\x0a\xff\xff\xff\xff\x0f")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value


async def test_valid_bytes_still_work(channel):
    reply = await channel.unary_unary(SERVICE + "GetLoad")(pb.GetLoadRequest().SerializeToString())
    assert pb.Load.FromString(reply).max_running == 64
    request = pb.GenerateRequest(request_id="r1", chat=pb.Chat(messages=[pb.ChatMessage(
        role="user", content=[pb.ContentPart(text="hi")])]), sampling=pb.SamplingParams(max_tokens=4))
    messages = [m async for m in channel.unary_stream(SERVICE + "Generate")(request.SerializeToString())]
    assert messages
