"""The gateway's client of the inference service (``trtllm_responses.inference.v1``).

* One ``grpc.aio`` channel per replica address, with keepalive pings, message-size limits
  and per-call deadlines (``request_timeout_s`` for Generate, ``rpc_timeout_s`` for unary
  calls).
* ``GetModelInfo`` is cached for ``model_info_ttl_s``; a failed refresh keeps serving the
  last good answer, so a restarting replica does not fail requests that need no model.
* Readiness is the standard gRPC health check of the service (status SERVING).
* Replica choice is isolated in :class:`ReplicaPool.pick` (round robin today). A later
  issue replaces it with load-aware routing over ``GetLoad``; nothing else needs to change.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

from .metrics import GatewayMetrics
from .settings import GatewaySettings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


@dataclass
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.InferenceServiceStub
    health: health_pb2_grpc.HealthStub


class ReplicaPool:
    """The replicas behind the gateway. ``pick()`` is the routing seam."""

    def __init__(self, addresses: tuple[str, ...], settings: GatewaySettings) -> None:
        options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self.replicas = []
        for address in addresses:
            channel = grpc.aio.insecure_channel(address, options=options)
            self.replicas.append(Replica(address, channel, pb_grpc.InferenceServiceStub(channel),
                                         health_pb2_grpc.HealthStub(channel)))
        self._next = itertools.cycle(self.replicas)

    def pick(self) -> Replica:
        return next(self._next)

    async def close(self) -> None:
        await asyncio.gather(*(r.channel.close() for r in self.replicas), return_exceptions=True)


class ServiceClient:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = ReplicaPool(settings.service, settings)
        self._info: pb.ModelInfo | None = None
        self._info_at = 0.0
        self._info_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.pool.close()

    def generate(self, request: pb.GenerateRequest) -> grpc.aio.UnaryStreamCall:
        """Start a Generate stream; iterate it or ``read()`` it. Cancel it to abort."""
        replica = self.pool.pick()
        self.metrics.upstream_requests.labels(replica.address).inc()
        return replica.stub.Generate(request, timeout=self.settings.request_timeout_s)

    async def count_tokens(self, chat: pb.Chat) -> tuple[int, int]:
        """(input tokens of the templated chat, the model's context length)."""
        reply = await self.pool.pick().stub.CountTokens(pb.CountTokensRequest(chat=chat),
                                                        timeout=self.settings.rpc_timeout_s)
        return reply.input_tokens, reply.max_context_length

    async def model_info(self) -> pb.ModelInfo:
        """The served model's description (cached; raises AioRpcError when never reached)."""
        if self._info is not None and time.monotonic() - self._info_at < self.settings.model_info_ttl_s:
            return self._info
        async with self._info_lock:
            if self._info is not None and time.monotonic() - self._info_at < self.settings.model_info_ttl_s:
                return self._info
            try:
                self._info = await self.pool.pick().stub.GetModelInfo(
                    pb.GetModelInfoRequest(), timeout=self.settings.rpc_timeout_s)
            except grpc.aio.AioRpcError:
                if self._info is None:
                    raise
            self._info_at = time.monotonic()
            return self._info

    async def get_load(self) -> list[pb.Load]:
        return list(await asyncio.gather(*(r.stub.GetLoad(pb.GetLoadRequest(), timeout=self.settings.rpc_timeout_s)
                                           for r in self.pool.replicas)))

    async def ready(self) -> bool:
        """True when at least one replica reports SERVING."""
        async def one(replica: Replica) -> bool:
            try:
                reply = await replica.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                   timeout=min(self.settings.rpc_timeout_s, 2.0))
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        results = await asyncio.gather(*(one(r) for r in self.pool.replicas))
        return any(results)
