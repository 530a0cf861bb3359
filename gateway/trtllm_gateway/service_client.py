"""The gateway's client of the inference service (``trtllm_responses.inference.v1``).

Protocol:

* ``--service`` names targets (``discovery.py``): fixed ``host:port`` addresses and/or
  ``dns:///name:port`` names whose every A/AAAA record is a replica, re-resolved every
  ``--resolve-interval-s``. Each replica has its own ``grpc.aio`` channel (keepalive pings,
  message-size limits, reconnect backoff capped at ``MAX_RECONNECT_BACKOFF_MS`` so a
  restarted replica is back within seconds). A replica that leaves DNS is retiring: it
  takes no new requests and its channel closes when its last in-flight call ends.
* Every ``--load-poll-interval-s`` each replica is probed: ``grpc.health.v1`` Check (status
  SERVING) and ``GetLoad`` (queued + running, draining). A replica is in rotation while its
  last check said SERVING and it is not draining; a generation that fails with UNAVAILABLE
  takes its replica out at once (until the next probe passes).
* Each generation goes to the replica :func:`routing.pick` chooses (with a
  ``prompt_cache_key``: the key's replica by rendezvous hashing unless it is overloaded,
  ``--affinity-slack``; otherwise least outstanding, ties random) and counts in that
  replica's in-flight until its call ends. A call that fails
  with UNAVAILABLE before its first message moves to another replica once
  (:class:`RoutedCall`, ``routing.may_retry``); one that has produced output never does.
* Unary calls (CountTokens, GetModelInfo) go to a picked replica with the same retry-once
  rule. ``GetModelInfo`` is cached for ``model_info_ttl_s``; a failed refresh keeps serving
  the last good answer, so a restarting replica does not fail requests that need no model.
* Readiness: at least one replica answers the health check with SERVING.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

from .discovery import GetAddrInfo, Target, diff, format_address, parse_targets, resolve_all
from .metrics import GatewayMetrics
from .routing import RETRYABLE_CODES, ReplicaState, may_retry, pick, routing_key
from .settings import GatewaySettings

log = logging.getLogger("trtllm_gateway.service_client")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
MAX_RECONNECT_BACKOFF_MS = 5000  # gRPC's default (120 s) would keep a restarted replica out for minutes
PROBE_TIMEOUT_S = 2.0            # a probe slower than this counts as a failed one
EMPTY_RESOLVE_INTERVAL_S = 1.0   # while no replica is known, look again sooner
_HEALTH_REQUEST = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
_SERVING = health_pb2.HealthCheckResponse.SERVING


def _channel_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def no_replica_error() -> grpc.aio.AioRpcError:
    """What a call gets when there is no replica at all (maps to 503 service_unavailable)."""
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details="no inference service replica is known")


class Replica(ReplicaState):
    """One replica: its routing state plus its channel and stubs."""

    def __init__(self, address: str, options: list[tuple[str, int]]) -> None:
        super().__init__(address)
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = pb_grpc.InferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


class ReplicaPool:
    """The replicas behind the gateway: discovery, probing, and in-flight accounting."""

    def __init__(self, targets: list[Target], settings: GatewaySettings, metrics: GatewayMetrics,
                 rng: random.Random | None = None, getaddrinfo: GetAddrInfo | None = None) -> None:
        self.targets, self.settings, self.metrics = targets, settings, metrics
        self._getaddrinfo = getaddrinfo  # None: the running loop's (tests pass their own DNS)
        self.rng = rng or random.Random()
        self.replicas: list[Replica] = []
        self._options = _channel_options(settings)
        self._tasks: list[asyncio.Task] = []
        self._closing: set[asyncio.Task] = set()
        metrics.replicas_from(lambda: [r.address for r in self.replicas if not r.retiring])
        for target in targets:  # fixed addresses are known without a lookup
            if not target.dns:
                self._add(format_address(target.host, target.port))

    async def start(self) -> None:
        """First lookup and probe round, then the periodic ones in the background."""
        try:  # a resolver that hangs must not hold up startup; the resolve loop keeps trying
            await asyncio.wait_for(self.refresh(), self.settings.rpc_timeout_s)
        except TimeoutError:
            log.warning("service targets not resolved within %.1fs; retrying in the background",
                        self.settings.rpc_timeout_s)
        await self.probe_all()
        if any(t.dns for t in self.targets):
            self._tasks.append(asyncio.create_task(self._resolve_loop()))
        self._tasks.append(asyncio.create_task(self._probe_loop()))

    async def _resolve_loop(self) -> None:
        while True:
            interval = self.settings.resolve_interval_s
            await asyncio.sleep(interval if self.replicas else min(interval, EMPTY_RESOLVE_INTERVAL_S))
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop discovery for good
                log.exception("replica discovery failed")

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.load_poll_interval_s)
            try:
                await self.probe_all()
            except Exception:
                log.exception("replica probing failed")

    async def refresh(self) -> None:
        """Resolve the dns:/// targets; new addresses join (after a probe), vanished ones retire."""
        if not any(t.dns for t in self.targets):
            return
        resolved, complete = await resolve_all(self.targets, self._getaddrinfo)
        added, removed = diff((r.address for r in self.replicas if not r.retiring), resolved, complete)
        joined = [self._add(address) for address in sorted(added)]
        if joined:
            await asyncio.gather(*(self.probe(r) for r in joined))
        for replica in [r for r in self.replicas if r.address in removed]:
            self._retire(replica)

    def _add(self, address: str) -> Replica:
        for replica in self.replicas:
            if replica.address == address:  # it came back before its channel closed
                replica.retiring = False
                return replica
        replica = Replica(address, self._options)
        self.replicas.append(replica)
        log.info("replica %s joined", address)
        self._publish(replica)
        return replica

    def _retire(self, replica: Replica) -> None:
        replica.retiring = True
        log.info("replica %s left discovery (%d in flight)", replica.address, replica.in_flight)
        for gauge in (self.metrics.replica_healthy, self.metrics.replica_outstanding):
            with contextlib.suppress(KeyError):
                gauge.remove(replica.address)
        if replica.in_flight == 0:
            self._close(replica)

    def _close(self, replica: Replica) -> None:
        self.replicas.remove(replica)
        task = asyncio.ensure_future(replica.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in self.replicas if not r.retiring))

    async def probe(self, replica: Replica) -> None:
        """Health check and GetLoad of one replica; either failing means 'not healthy'."""
        timeout = min(self.settings.rpc_timeout_s, PROBE_TIMEOUT_S)
        health, load = await asyncio.gather(
            # types-grpcio-health-checking's HealthStub declares no methods
            replica.health.Check(_HEALTH_REQUEST, timeout=timeout),  # type: ignore[attr-defined]
            replica.stub.GetLoad(pb.GetLoadRequest(), timeout=timeout), return_exceptions=True)
        for result in (health, load):
            if isinstance(result, Exception) and not isinstance(result, grpc.aio.AioRpcError):
                log.warning("probe of %s failed: %r", replica.address, result)
        if isinstance(load, pb.Load):
            replica.record_load(load.queued, load.running, load.draining)
        replica.healthy = isinstance(health, health_pb2.HealthCheckResponse) and health.status == _SERVING
        self._publish(replica)

    def _publish(self, replica: Replica) -> None:
        if not replica.retiring:
            self.metrics.replica_healthy.labels(replica.address).set(1 if replica.in_rotation else 0)
            self.metrics.replica_outstanding.labels(replica.address).set(replica.outstanding())

    def pick(self, exclude: list[str] | tuple[str, ...] = (), key: str | None = None) -> Replica | None:
        return pick(self.replicas, self.rng, exclude, key, self.settings.affinity_slack)

    def acquire(self, exclude: list[str] | tuple[str, ...] = (), key: str | None = None) -> Replica | None:
        """Pick a replica for a generation (``key``: its routing key) and count it in flight
        there (see ``release``)."""
        replica = self.pick(exclude, key)
        if replica is not None:
            replica.in_flight += 1
            self._publish(replica)
        return replica

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self._publish(replica)
        if replica.retiring and replica.in_flight == 0 and replica in self.replicas:
            self._close(replica)

    def mark_unavailable(self, replica: Replica) -> None:
        """A call saw UNAVAILABLE: out of rotation until the next probe says SERVING."""
        if replica.healthy:
            log.warning("replica %s is unavailable; out of rotation until it passes a health check",
                        replica.address)
        replica.healthy = False
        self._publish(replica)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(r.channel.close() for r in self.replicas), *self._closing, return_exceptions=True)


class RoutedCall:
    """A Generate stream on a picked replica; ``read()`` it (or iterate), ``cancel()`` to abort.

    Before its first message a call that fails with UNAVAILABLE is re-sent once to another
    replica, inside ``read()``, within the same overall deadline; the caller never sees it.
    """

    def __init__(self, client: ServiceClient, request: pb.GenerateRequest, key: str | None = None) -> None:
        self._client, self._request, self._key = client, request, key
        self._deadline = time.monotonic() + client.settings.request_timeout_s
        self._tried: list[str] = []
        self._received = self._cancelled = False
        replica = client.pool.acquire(key=key)
        if replica is None:
            raise no_replica_error()
        self._call = self._send(replica)

    def _send(self, replica: Replica) -> grpc.aio.UnaryStreamCall:
        self.replica = replica
        self._tried.append(replica.address)
        self._client.metrics.upstream_requests.labels(replica.address).inc()
        timeout = max(self._deadline - time.monotonic(), 0.001)
        call = replica.stub.Generate(self._request, timeout=timeout)
        call.add_done_callback(lambda _call: self._client.pool.release(replica))
        return call

    async def read(self):
        while True:
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                self._call = self._retry(exc)
                continue
            if message is not grpc.aio.EOF:
                self._received = True
            return message

    def _retry(self, exc: grpc.aio.AioRpcError) -> grpc.aio.UnaryStreamCall:
        """The next attempt's call, or re-raise ``exc`` when the policy says no."""
        pool = self._client.pool
        if exc.code() in RETRYABLE_CODES:
            pool.mark_unavailable(self.replica)
        if self._cancelled or not may_retry(exc.code(), self._received, len(self._tried)):
            raise exc
        replica = pool.acquire(exclude=self._tried, key=self._key)
        if replica is None:
            raise exc
        log.info("replica %s failed before output (%s); retrying on %s", self.replica.address,
                 exc.code().name, replica.address)
        self._client.metrics.upstream_retries.labels(self.replica.address).inc()
        return self._send(replica)

    async def __aiter__(self):
        while (message := await self.read()) is not grpc.aio.EOF:
            yield message

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel()


class ServiceClient:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = ReplicaPool(parse_targets(settings.service), settings, metrics, rng)
        self._info: pb.ModelInfo | None = None
        self._info_at = 0.0
        self._info_lock = asyncio.Lock()

    async def start(self) -> None:
        """Discover and probe the replicas once, then keep doing so in the background."""
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()

    def generate(self, request: pb.GenerateRequest, prompt_cache_key: str | None = None,
                 tenant: str = "") -> RoutedCall:
        """Start a Generate stream on a picked replica (the ``prompt_cache_key``'s, within the
        tenant, when given); ``read()`` it, ``cancel()`` to abort."""
        return RoutedCall(self, request, routing_key(tenant, prompt_cache_key))

    async def _unary(self, method: str, request):
        """One unary call on a picked replica, retried once elsewhere on UNAVAILABLE."""
        tried: list[str] = []
        while True:
            replica = self.pool.pick(exclude=tried)
            if replica is None:
                raise no_replica_error()
            tried.append(replica.address)
            try:
                return await getattr(replica.stub, method)(request, timeout=self.settings.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE_CODES:
                    self.pool.mark_unavailable(replica)
                if not may_retry(exc.code(), False, len(tried)) or self.pool.pick(exclude=tried) is None:
                    raise

    async def count_tokens(self, chat: pb.Chat) -> tuple[int, int]:
        """(input tokens of the templated chat, the model's context length)."""
        reply = await self._unary("CountTokens", pb.CountTokensRequest(chat=chat))
        return reply.input_tokens, reply.max_context_length

    async def model_info(self) -> pb.ModelInfo:
        """The served model's description (cached; raises AioRpcError when never reached)."""
        if self._info is not None and time.monotonic() - self._info_at < self.settings.model_info_ttl_s:
            return self._info
        async with self._info_lock:
            if self._info is not None and time.monotonic() - self._info_at < self.settings.model_info_ttl_s:
                return self._info
            try:
                self._info = await self._unary("GetModelInfo", pb.GetModelInfoRequest())
            except grpc.aio.AioRpcError:
                if self._info is None:
                    raise
            self._info_at = time.monotonic()
            return self._info

    async def ready(self) -> bool:
        """True when at least one replica reports SERVING (probes them all now)."""
        await self.pool.probe_all()
        return any(r.healthy for r in self.pool.replicas if not r.retiring)
