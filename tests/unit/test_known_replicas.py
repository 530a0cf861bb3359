"""/metrics with several workers leaves out the replica gauges of replicas the serving worker
no longer knows (metrics._KnownReplicas over the merged multiprocess files)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from trtllm_gateway.metrics import _KnownReplicas


class _Merged:
    """What MultiProcessCollector yields: merged families, here two replicas' gauges and a counter."""

    def collect(self):
        for name in ("trtllm_gateway_replica_healthy", "trtllm_gateway_replica_outstanding"):
            gauge = GaugeMetricFamily(name, "x", labels=["replica"])
            gauge.add_metric(["10.0.0.1:50051"], 1)
            gauge.add_metric(["10.0.0.2:50051"], 0)
            yield gauge
        counter = CounterMetricFamily("trtllm_gateway_upstream_requests", "x", labels=["replica"])
        counter.add_metric(["10.0.0.2:50051"], 7)
        yield counter


def _exposed(known) -> str:
    collector = _KnownReplicas(_Merged())
    collector.known = known
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_gauges_of_replicas_this_worker_no_longer_knows_are_left_out():
    text = _exposed(lambda: ["10.0.0.1:50051"])
    assert 'trtllm_gateway_replica_healthy{replica="10.0.0.1:50051"} 1.0' in text
    assert 'trtllm_gateway_replica_outstanding{replica="10.0.0.1:50051"} 1.0' in text
    assert 'replica_healthy{replica="10.0.0.2:50051"}' not in text
    assert 'replica_outstanding{replica="10.0.0.2:50051"}' not in text
    # counters keep a departed replica's history
    assert 'trtllm_gateway_upstream_requests_total{replica="10.0.0.2:50051"} 7.0' in text


def test_before_the_pool_says_which_replicas_it_knows_nothing_is_left_out():
    text = _exposed(None)
    assert 'trtllm_gateway_replica_healthy{replica="10.0.0.2:50051"} 0.0' in text
