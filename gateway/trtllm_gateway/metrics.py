"""Every Prometheus metric of the gateway, declared in one place (served on ``GET /metrics``).

Names are a contract: the Helm chart's dashboard and alerts query them.

* ``trtllm_gateway_http_requests_total{route,method,status}`` and
  ``trtllm_gateway_http_request_duration_seconds{route,method}``: every HTTP request; the
  route is the matched pattern (``/v1/responses/{response_id}``), ``unmatched`` otherwise.
* ``trtllm_gateway_time_to_first_token_seconds``: request arrival -> first output piece sent.
* ``trtllm_gateway_inter_token_latency_seconds``: gap between output pieces.
* ``trtllm_gateway_e2e_request_latency_seconds``: arrival -> response finished (any status).
* ``trtllm_gateway_active_streams``: generations in flight (SSE and JSON).
* ``trtllm_gateway_output_tokens_total``: generated tokens, from the service's usage.
* ``trtllm_gateway_store_operation_seconds{operation}``: store calls.
* ``trtllm_gateway_overhead_seconds``: time per request spent in the gateway outside the
  service call (validation, store, translation, event encoding, writes).
* ``trtllm_gateway_upstream_requests_total{replica}``: generations sent to each replica
  (every attempt, so a retried generation counts once on each replica it tried).
* ``trtllm_gateway_upstream_retries_total{replica}``: generations moved to another replica
  after ``replica`` failed before their first message (``routing.may_retry``).
* ``trtllm_gateway_replica_healthy{replica}``: 1 while the replica is in rotation (health
  SERVING, not draining), else 0; the series goes away when the replica leaves DNS.
* ``trtllm_gateway_replica_outstanding{replica}``: the router's estimate of its outstanding
  requests (own in-flight + other clients' share of the last GetLoad).
* ``trtllm_gateway_hosted_tools_dropped_total{type}``: hosted tools (``web_search``...) not
  offered to the model under ``--hosted-tools drop`` (``hosted_tools.py``).

Several workers (``--workers``, ``workers.py``): each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the
variable is set), and ``/metrics`` of any worker serves them merged. Counters and
histograms are summed over every worker that ever ran (a restarted worker's counts stay).
Gauges merge over the live workers: ``active_streams`` is their sum, ``replica_healthy``
their minimum (0 when any worker has the replica out of rotation), ``replica_outstanding``
their maximum (each worker's estimate already counts the others' requests through GetLoad).
The files cannot drop a series, so ``/metrics`` leaves out the replica gauges' series of
replicas the serving worker no longer knows (:class:`_KnownReplicas`): a replica that left
discovery is gone from a worker's scrape once that worker has resolved it away.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this process is one of several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _ReplicaGauge(Gauge):
    """A gauge per replica whose series can be dropped: in multiprocess mode, where the files
    keep every series, it is set to 0 instead."""

    def remove(self, *labelvalues: Any) -> None:
        if multiprocess_dir() is None:
            super().remove(*labelvalues)
            return
        self.labels(*labelvalues).set(0)
        with self._lock:
            self._metrics.pop(tuple(str(v) for v in labelvalues), None)


REPLICA_HEALTHY, REPLICA_OUTSTANDING = "trtllm_gateway_replica_healthy", "trtllm_gateway_replica_outstanding"


class _KnownReplicas(Collector):
    """The workers' merged metrics, less the replica gauges' series of replicas that
    ``known()`` (this worker's replicas) does not name; all of them while it is None."""

    def __init__(self, merged: Collector) -> None:
        self.merged = merged
        self.known: Callable[[], Iterable[str]] | None = None

    def collect(self) -> Iterable[Metric]:
        known = None if self.known is None else set(self.known())
        for metric in self.merged.collect():
            if known is not None and metric.name in (REPLICA_HEALTHY, REPLICA_OUTSTANDING):
                metric.samples = [s for s in metric.samples if s.labels.get("replica") in known]
            yield metric


class GatewayMetrics:
    """The gateway's metrics on their own registry (several apps per process stay separate;
    with several workers, ``/metrics`` serves every worker's values merged)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        shared = multiprocess_dir()
        self.exposed = r
        self._known: _KnownReplicas | None = None
        if shared is not None:
            self.exposed = CollectorRegistry()
            self._known = _KnownReplicas(MultiProcessCollector(None, path=shared))
            self.exposed.register(self._known)
        self.http_requests = Counter("trtllm_gateway_http_requests_total", "HTTP requests.",
                                     ["route", "method", "status"], registry=r)
        self.http_duration = Histogram("trtllm_gateway_http_request_duration_seconds",
                                       "HTTP request duration (whole stream for SSE).",
                                       ["route", "method"], buckets=E2E_BUCKETS, registry=r)
        self.ttft = Histogram("trtllm_gateway_time_to_first_token_seconds",
                              "Request arrival to the first output piece sent.", buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("trtllm_gateway_inter_token_latency_seconds",
                             "Time between output pieces of one response.", buckets=TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("trtllm_gateway_e2e_request_latency_seconds",
                             "Request arrival to the finished response.", buckets=E2E_BUCKETS, registry=r)
        self.active_streams = Gauge("trtllm_gateway_active_streams", "Generations in flight.", registry=r,
                                    multiprocess_mode="livesum")
        self.output_tokens = Counter("trtllm_gateway_output_tokens_total", "Generated tokens.", registry=r)
        self.store_seconds = Histogram("trtllm_gateway_store_operation_seconds", "Store operation latency.",
                                       ["operation"], buckets=STORE_BUCKETS, registry=r)
        self.overhead = Histogram("trtllm_gateway_overhead_seconds",
                                  "Per-request time spent in the gateway outside the service call.",
                                  buckets=OVERHEAD_BUCKETS, registry=r)
        self.upstream_requests = Counter("trtllm_gateway_upstream_requests_total",
                                         "Generations sent to each inference replica.", ["replica"], registry=r)
        self.upstream_retries = Counter("trtllm_gateway_upstream_retries_total",
                                        "Generations retried elsewhere after this replica failed before output.",
                                        ["replica"], registry=r)
        self.replica_healthy = _ReplicaGauge(REPLICA_HEALTHY, "1 while the replica is in rotation.",
                                             ["replica"], registry=r, multiprocess_mode="livemin")
        self.replica_outstanding = _ReplicaGauge(
            REPLICA_OUTSTANDING, "Outstanding requests of the replica as the router estimates them.",
            ["replica"], registry=r, multiprocess_mode="livemax")
        self.hosted_tools_dropped = Counter("trtllm_gateway_hosted_tools_dropped_total",
                                            "Hosted tools in requests, not offered to the model.", ["type"],
                                            registry=r)

    def replicas_from(self, known: Callable[[], Iterable[str]]) -> None:
        """Where ``/metrics`` learns this worker's replicas (the pool), in multiprocess mode."""
        if self._known is not None:
            self._known.known = known

    @contextmanager
    def store_op(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.store_seconds.labels(operation).observe(time.perf_counter() - started)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.exposed), CONTENT_TYPE_LATEST


class TokenClock:
    """Per-response timing: TTFT, inter-token gaps and time spent waiting on the service."""

    __slots__ = ("metrics", "arrived", "last_piece", "upstream")

    def __init__(self, metrics: GatewayMetrics, arrived: float) -> None:
        self.metrics = metrics
        self.arrived = arrived
        self.last_piece: float | None = None
        self.upstream = 0.0  # seconds awaiting the service

    def piece(self) -> None:
        """An output piece was sent (or, for JSON replies, received)."""
        now = time.perf_counter()
        if self.last_piece is None:
            self.metrics.ttft.observe(now - self.arrived)
        else:
            self.metrics.itl.observe(now - self.last_piece)
        self.last_piece = now

    def finish(self, output_tokens: int) -> None:
        total = time.perf_counter() - self.arrived
        self.metrics.e2e.observe(total)
        self.metrics.overhead.observe(max(0.0, total - self.upstream))
        if output_tokens:
            self.metrics.output_tokens.inc(output_tokens)
