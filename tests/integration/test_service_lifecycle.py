"""Lifecycle: admission limits and draining (SIGTERM on the real process: tests/e2e/test_service_process.py)."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc
from trtllm_service.server import InferenceServer
from trtllm_service.settings import ServiceSettings

from .test_service import chat_request, collect

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _server(cpu_engine, **overrides) -> tuple[InferenceServer, grpc.aio.Channel]:
    settings = ServiceSettings(host="127.0.0.1", port=0, metrics_port=-1, log_format="text", **overrides)
    server = InferenceServer(settings, cpu_engine)
    await server.start()
    return server, grpc.aio.insecure_channel(server.address)


async def _first_delta(call) -> None:
    async for msg in call:
        if msg.HasField("delta") and msg.delta.text:
            return


async def test_queue_full_is_resource_exhausted(cpu_engine):
    server, channel = await _server(cpu_engine, max_batch_size=1, max_queue=0)
    stub = pb_grpc.InferenceServiceStub(channel)
    try:
        long_call = stub.Generate(chat_request("Write a long essay.", max_tokens=200, ignore_eos=True))
        await _first_delta(long_call)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(stub, chat_request("hi", max_tokens=4))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "capacity" in err.value.details()
        long_call.cancel()
    finally:
        await channel.close()
        await server.stop()


async def test_drain_finishes_running_streams_and_refuses_new_work(cpu_engine):
    server, channel = await _server(cpu_engine, grace_period_s=60)
    stub = pb_grpc.InferenceServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        running = stub.Generate(chat_request("Describe the moon.", max_tokens=48, ignore_eos=True))
        await _first_delta(running)
        drain = asyncio.create_task(server.drain())
        await asyncio.sleep(0.1)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(stub, chat_request("hi", max_tokens=4))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        final = None
        async for msg in running:
            if msg.HasField("final"):
                final = msg.final
        assert final is not None and final.finish_reason == pb.FINISH_REASON_LENGTH
        await asyncio.wait_for(drain, 30)
    finally:
        await channel.close()
        await server.stop()
