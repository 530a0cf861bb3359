"""The gRPC server: `InferenceService`, standard health, reflection, metrics and lifecycle.

Lifecycle (health of "" and of the service name):
  start: NOT_SERVING -> engine built and warmed up -> SERVING
  engine failure: `engine.health()` turns False -> NOT_SERVING (within 0.5 s) and new calls
  get UNAVAILABLE, so the gateway's router ejects the replica and retries elsewhere;
  drain (SIGTERM): NOT_SERVING, new Generate calls get UNAVAILABLE, running streams get up
  to `grace_period_s` to finish, then the server stops and the engine is released.

`ServiceInterceptor` applies the error table (errors.py) and the gRPC metrics to every
method of our service, so handlers only raise. Request bytes that do not decode as the
method's message are INVALID_ARGUMENT (gRPC itself would answer UNKNOWN).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

from .agentic import OutputPlanner
from .engine.base import Engine, EngineError
from .errors import InvalidRequest, NotServing, status_for
from .metrics import ServiceMetrics
from .pipeline import Admission, GenerationPipeline
from .settings import ServiceSettings
from .template import Templater

log = logging.getLogger("trtllm_service.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
_PREFIX = f"/{SERVICE_NAME}/"


class Undecodable:
    """Stands in for a request whose bytes are no message of its type. gRPC turns an
    exception raised while deserializing into UNKNOWN; the handler turns this into the
    INVALID_ARGUMENT every other bad request gets."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Undecodable(exc)
    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise InvalidRequest(f"the request message could not be decoded: {request.error}")


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Error table + gRPC metrics for our service's methods."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(_PREFIX):
            return handler
        method = details.method[len(_PREFIX):]
        handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(method, handler.unary_stream))
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(method, handler.unary_unary))
        return handler

    def _begin(self, method: str, kind: str) -> float:
        self.metrics.grpc_started.labels(SERVICE_NAME, method, kind).inc()
        return time.monotonic()

    def _end(self, method: str, kind: str, code: grpc.StatusCode, started: float) -> None:
        self.metrics.grpc_handled.labels(SERVICE_NAME, method, kind, code.name).inc()
        self.metrics.grpc_seconds.labels(SERVICE_NAME, method, kind).observe(time.monotonic() - started)

    @staticmethod
    async def _fail(context: grpc.aio.ServicerContext, exc: Exception) -> grpc.StatusCode:
        code, message, trailers = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.error("request failed", exc_info=exc)
        context.set_trailing_metadata(trailers)
        await context.abort(code, message)
        return code  # unreachable: abort raises

    def _wrap_unary(self, method: str, inner: Callable) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = self._begin(method, "unary"), grpc.StatusCode.OK
            try:
                _check_decoded(request)
                return await inner(request, context)
            except Exception as exc:  # noqa: BLE001 - the error table maps every failure to a status
                code = status_for(exc)[0]
                await self._fail(context, exc)
            finally:
                self._end(method, "unary", code, started)
        return behavior

    def _wrap_stream(self, method: str, inner: Callable) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, code = self._begin(method, "server_stream"), grpc.StatusCode.OK
            try:
                _check_decoded(request)
                async for message in inner(request, context):
                    yield message
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - the error table maps every failure to a status
                code = status_for(exc)[0]
                await self._fail(context, exc)
            finally:
                self._end(method, "server_stream", code, started)
        return behavior


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> AsyncIterator[pb.GenerateResponse]:
        pipeline, sent = self.server.ready_pipeline(), False
        try:
            async for message in pipeline.generate(request):
                sent = True
                yield message
        except EngineError as exc:
            if sent or self.server.engine.health():
                raise
            # The engine died under this request before it produced anything: UNAVAILABLE
            # lets a router retry it on another replica (INTERNAL would fail the client).
            raise NotServing(f"the {self.server.engine.name} engine failed: {exc}") from exc

    async def CountTokens(self, request: pb.CountTokensRequest, context: Any) -> pb.CountTokensResponse:
        pipeline = self.server.ready_pipeline(allow_draining=True)
        ids = await pipeline.prompt_ids(request)
        return pb.CountTokensResponse(input_tokens=len(ids), max_context_length=self.server.engine.max_context_length)

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.ModelInfo:
        self.server.ready_pipeline(allow_draining=True)
        return self.server.model_info()

    async def GetLoad(self, request: pb.GetLoadRequest, context: Any) -> pb.Load:
        load = self.server.engine.load()
        return pb.Load(queued=load.queued, running=load.running, kv_cache_utilization=load.kv_cache_utilization,
                       kv_cache_hit_rate=load.kv_cache_hit_rate, max_running=load.max_running,
                       draining=self.server.draining)


class InferenceServer:
    """Owns the gRPC server, the engine's lifecycle and the metrics endpoint."""

    def __init__(self, settings: ServiceSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = ServiceMetrics(settings.served_model_name or "")
        self.health = health.aio.HealthServicer()
        self.pipeline: GenerationPipeline | None = None
        self.draining = False
        self.port = 0
        self.metrics_port = -1
        self.loaded_at = 0
        self._poller: asyncio.Task | None = None
        opts = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            # Let clients ping idle connections (gateways keep long-lived channels).
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self.grpc = grpc.aio.server(interceptors=[ServiceInterceptor(self.metrics)], options=opts)
        pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(self), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.grpc)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def start(self) -> None:
        """Binds, serves health (NOT_SERVING), loads the engine, then turns SERVING."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self.grpc.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        await self.grpc.start()
        if self.settings.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(self.settings.metrics_port)
        if not self.engine.health():
            await self.engine.start()
        self.loaded_at = int(time.time())
        self.metrics.bind_model(self.settings.served_model_name or self.engine.model_id)
        templater = Templater(self.engine.tokenizer, supports_images=self.engine.supports_images)
        limit = self.settings.max_batch_size + self.settings.max_queue
        self.planner = OutputPlanner(self.engine, self.settings.tool_parser, self.settings.reasoning_parser)
        self.pipeline = GenerationPipeline(self.engine, templater, self.metrics, Admission(limit), self.planner,
                                           self.settings.stream_interval)
        self._poller = asyncio.create_task(self._poll_load())
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"port": self.port, "metrics_port": self.metrics_port,
                                   "model": self.engine.model_id, "engine": self.engine.name})

    def ready_pipeline(self, allow_draining: bool = False) -> GenerationPipeline:
        if self.pipeline is None:
            raise NotServing("the engine is still starting; retry shortly")
        if self.draining and not allow_draining:
            raise NotServing("the server is draining and accepts no new requests")
        if not self.engine.health():
            raise NotServing(f"the {self.engine.name} engine has failed and serves no requests")
        return self.pipeline

    def model_info(self) -> pb.ModelInfo:
        planner = self.planner
        caps = pb.Capabilities(tools=True, reasoning=planner.supports_reasoning,
                               structured_output=self.engine.supports_guided, images=self.engine.supports_images,
                               logprobs=self.engine.supports_logprobs)
        return pb.ModelInfo(model_id=self.metrics.model_name, max_context_length=self.engine.max_context_length,
                            capabilities=caps, engine=self.engine.name, tool_parser=planner.tool_parser,
                            reasoning_parser=planner.reasoning_parser or "", created=self.loaded_at)

    async def _poll_load(self) -> None:
        """Every 0.5 s: publish the engine's load, and mirror its health in gRPC health, so
        probes and routers see a dead engine (TensorRT-LLM executor shut down, CPU decode
        loop gone) as NOT_SERVING instead of a replica that fails fast and looks idle."""
        serving = True
        while True:
            load = self.engine.load()
            self.metrics.set_load(load.queued, load.running, load.kv_cache_utilization, load.kv_cache_hit_rate)
            healthy = self.engine.health()
            if healthy != serving and not self.draining:
                serving = healthy
                if healthy:
                    log.info("engine healthy again: SERVING")
                else:
                    log.error("engine unhealthy: NOT_SERVING")
                await self._set_health(health_pb2.HealthCheckResponse.SERVING if healthy
                                       else health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(0.5)

    async def drain(self, grace: float | None = None) -> None:
        """Stops taking work, lets running streams finish within the grace period, stops."""
        grace = self.settings.grace_period_s if grace is None else grace
        self.draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + grace
        while self.pipeline is not None and self.pipeline.admission.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop(max(0.0, deadline - time.monotonic()))

    async def stop(self, grace: float = 0.0) -> None:
        if self._poller is not None:
            self._poller.cancel()
        await self.grpc.stop(grace)
        self.metrics.shutdown_http()

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "[::]") else self.settings.host
        return f"{host}:{self.port}"
