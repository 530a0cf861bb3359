"""Every Prometheus metric the inference service exports, declared in one place.

Names follow vLLM's (`vllm:time_to_first_token_seconds` ...) with our own `trtllm:` prefix,
so dashboards and the Kubernetes Gateway API Inference Extension find familiar series:
queued requests, running requests and KV-cache utilisation. gRPC server metrics follow the
go-grpc-prometheus names (`grpc_server_handled_total` ...).

The metrics live in their own registry (not the process-global one), so several servers in
one test process do not collide; `ServiceMetrics` owns one registry.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

FINISH_REASONS = ("stop", "length", "tool_calls", "cancelled", "error")


class ServiceMetrics:
    def __init__(self, model_name: str = "") -> None:
        self.registry = r = CollectorRegistry()
        self.model_name = model_name
        m = ("model_name",)
        # gRPC server
        self.grpc_started = Counter("grpc_server_started", "RPCs started on the server.",
                                    ("grpc_service", "grpc_method", "grpc_type"), registry=r)
        self.grpc_handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                                    ("grpc_service", "grpc_method", "grpc_type", "grpc_code"), registry=r)
        self.grpc_seconds = Histogram("grpc_server_handling_seconds", "RPC handling time until the last message.",
                                      ("grpc_service", "grpc_method", "grpc_type"), buckets=_E2E_BUCKETS, registry=r)
        # Engine requests
        self.ttft = Histogram("trtllm:time_to_first_token_seconds", "Time from request arrival to its first token.",
                              m, buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("trtllm:inter_token_latency_seconds", "Time between consecutive output tokens.",
                             m, buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram("trtllm:e2e_request_latency_seconds", "Time from request arrival to its end.",
                             m, buckets=_E2E_BUCKETS, registry=r)
        self.queue_time = Histogram("trtllm:queue_time_seconds",
                                    "Time a request waited in the engine's queue before it was scheduled "
                                    "(engines that report it: the CPU engine).",
                                    m, buckets=_LATENCY_BUCKETS, registry=r)
        self.running = Gauge("trtllm:num_requests_running", "Requests being decoded by the engine.", m, registry=r)
        self.waiting = Gauge("trtllm:num_requests_waiting", "Requests waiting for an engine slot.", m, registry=r)
        self.kv_usage = Gauge("trtllm:kv_cache_usage_perc", "KV-cache (or slot) utilisation, 0..1.", m, registry=r)
        self.kv_hit_rate = Gauge("trtllm:kv_cache_hit_rate", "Prefix-cache hit rate, 0..1.", m, registry=r)
        self.prompt_tokens = Counter("trtllm:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.generation_tokens = Counter("trtllm:generation_tokens", "Tokens generated.", m, registry=r)
        self.finished = Counter("trtllm:requests_finished", "Requests finished, by finish reason.",
                                m + ("finished_reason",), registry=r)
        if model_name:
            self.bind_model(model_name)

    def bind_model(self, model_name: str) -> None:
        """Sets the `model_name` label once the engine knows its model id."""
        self.model_name = model_name
        for reason in FINISH_REASONS:  # export zeros so rates exist before the first event
            self.finished.labels(model_name, reason)
        self.set_load(0, 0, 0.0, 0.0)

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Starts the /metrics HTTP endpoint on a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http_server = server
        return server.server_port

    def shutdown_http(self) -> None:
        server = getattr(self, "_http_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def set_load(self, queued: int, running: int, kv_usage: float, kv_hit_rate: float) -> None:
        self.waiting.labels(self.model_name).set(queued)
        self.running.labels(self.model_name).set(running)
        self.kv_usage.labels(self.model_name).set(kv_usage)
        self.kv_hit_rate.labels(self.model_name).set(kv_hit_rate)
