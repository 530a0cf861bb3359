"""Builds the Grafana dashboard JSON (Grafana dashboard model, schemaVersion 39) for the chart.

The panels are data (the PANELS table below); this script turns them into the JSON that the
chart ships as a ConfigMap for the Grafana sidecar. Generated rather than hand-edited so that
every query shares one selector and one quantile form; tests/deploy checks that the committed
JSON is what this script produces and that every metric it queries is exported by the code.

Usage: python dashboards/build_dashboard.py [--check]
  --check  exit 1 if the committed JSON differs from the generated one (no write).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "helm/trtllm-responses/dashboards/trtllm-responses.json"
UID = "trtllm-responses"

# Selectors: one namespace per release; engine series also carry model_name.
GW = 'namespace="$namespace"'
INF = 'namespace="$namespace",model_name=~"$model"'
GRPC = 'namespace="$namespace",grpc_service="trtllm_responses.inference.v1.InferenceService"'
RATE = "$__rate_interval"


def quantiles(metric: str, sel: str, by: str = "") -> list[tuple[str, str]]:
    """p50/p95/p99 of a histogram, optionally split by extra labels."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
             f"p{int(q * 100)}{suffix}") for q in (0.5, 0.95, 0.99)]


def rate(metric: str, sel: str, by: str, legend: str) -> tuple[str, str]:
    return (f"sum by ({by}) (rate({metric}{{{sel}}}[{RATE}]))", legend)


# (title, unit, targets, description). A title starting with "#" starts a collapsible row.
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("# Gateway (HTTP / SSE)", "", [], ""),
    ("Gateway requests by status", "reqps",
     [rate("trtllm_gateway_http_requests_total", GW, "status", "{{status}}")],
     "HTTP requests per second answered by the gateway, by status code."),
    ("Gateway error ratio", "percentunit",
     [(f'sum(rate(trtllm_gateway_http_requests_total{{{GW},status=~"5.."}}[{RATE}])) / '
       f'sum(rate(trtllm_gateway_http_requests_total{{{GW}}}[{RATE}]))', "5xx"),
      (f'sum(rate(trtllm_gateway_http_requests_total{{{GW},status=~"4.."}}[{RATE}])) / '
       f'sum(rate(trtllm_gateway_http_requests_total{{{GW}}}[{RATE}]))', "4xx")],
     "Share of requests answered with 5xx (our fault) and 4xx (the client's)."),
    ("Gateway time to first token", "s",
     quantiles("trtllm_gateway_time_to_first_token_seconds", GW),
     "From the HTTP request to the first output text event, as the client sees it."),
    ("Gateway inter-token latency", "s",
     quantiles("trtllm_gateway_inter_token_latency_seconds", GW), "Gap between streamed text events."),
    ("Gateway end-to-end latency", "s",
     quantiles("trtllm_gateway_e2e_request_latency_seconds", GW), "From request to response.completed."),
    ("Gateway overhead", "s", quantiles("trtllm_gateway_overhead_seconds", GW),
     "Time the gateway itself adds (parsing, store, framing) on top of the inference service."),
    ("Active streams per gateway pod", "short",
     [(f"sum by (pod) (trtllm_gateway_active_streams{{{GW}}})", "{{pod}}")], "Open SSE streams."),
    ("Output tokens/s (gateway)", "short",
     [(f"sum(rate(trtllm_gateway_output_tokens_total{{{GW}}}[{RATE}]))", "tokens/s")],
     "Output tokens relayed to clients per second."),
    ("Upstream requests per inference replica", "reqps",
     [rate("trtllm_gateway_upstream_requests_total", GW, "replica", "{{replica}}")],
     "How the gateway spreads Generate calls over replicas."),
    ("Store operation p95", "s",
     [(f"histogram_quantile(0.95, sum by (le, operation) "
       f"(rate(trtllm_gateway_store_operation_seconds_bucket{{{GW}}}[{RATE}])))", "{{operation}}")],
     "Response store latency by operation."),
    ("HTTP request duration p95 by route", "s",
     [(f"histogram_quantile(0.95, sum by (le, route) "
       f"(rate(trtllm_gateway_http_request_duration_seconds_bucket{{{GW}}}[{RATE}])))", "{{route}}")],
     "Whole HTTP exchange; for streams this is the stream's length."),
    ("# Inference service (gRPC / engine)", "", [], ""),
    ("Inference RPCs by code", "reqps",
     [rate("grpc_server_handled_total", GRPC, "grpc_code", "{{grpc_code}}"),
      (f"sum(rate(grpc_server_started_total{{{GRPC}}}[{RATE}]))", "started")],
     "gRPC calls finished per second by status code, and calls started."),
    ("Requests finished by reason", "reqps",
     [rate("trtllm:requests_finished_total", INF, "finished_reason", "{{finished_reason}}")],
     "stop, length, tool_calls, cancelled, error."),
    ("Engine time to first token", "s", quantiles("trtllm:time_to_first_token_seconds", INF),
     "From arrival at the service to the first token (includes queueing and prefill)."),
    ("Engine inter-token latency", "s", quantiles("trtllm:inter_token_latency_seconds", INF),
     "Decode step time as each request sees it."),
    ("Engine end-to-end latency", "s", quantiles("trtllm:e2e_request_latency_seconds", INF), ""),
    ("Queue time", "s", quantiles("trtllm:queue_time_seconds", INF),
     "Time a request waits for an engine slot."),
    ("Tokens/s", "short",
     [(f"sum(rate(trtllm:prompt_tokens_total{{{INF}}}[{RATE}]))", "prompt"),
      (f"sum(rate(trtllm:generation_tokens_total{{{INF}}}[{RATE}]))", "generation")],
     "Prompt (prefill) and generated tokens per second, all replicas."),
    ("Queue vs running", "short",
     [(f"sum(trtllm:num_requests_waiting{{{INF}}})", "waiting"),
      (f"sum(trtllm:num_requests_running{{{INF}}})", "running")],
     "Waiting requests drive autoscaling: running at max batch plus a growing queue = add replicas."),
    ("KV-cache utilisation per replica", "percentunit",
     [(f"max by (pod) (trtllm:kv_cache_usage_perc{{{INF}}})", "{{pod}}")],
     "Above 95% the engine queues or preempts."),
    ("KV-cache (prefix) hit rate per replica", "percentunit",
     [(f"max by (pod) (trtllm:kv_cache_hit_rate{{{INF}}})", "{{pod}}")], ""),
    ("Inference RPC handling p95 by method", "s",
     [(f"histogram_quantile(0.95, sum by (le, grpc_method) "
       f"(rate(grpc_server_handling_seconds_bucket{{{GRPC}}}[{RATE}])))", "{{grpc_method}}")], ""),
]

VARIABLES = [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
    {"name": "namespace", "type": "query", "label": "Namespace",
     "query": "label_values(trtllm:num_requests_running, namespace)"},
    {"name": "model", "type": "query", "label": "Model", "includeAll": True, "allValue": ".*",
     "query": 'label_values(trtllm:num_requests_running{namespace="$namespace"}, model_name)'},
]
DS = {"type": "prometheus", "uid": "${datasource}"}


def _variable(v: dict) -> dict:
    out = {"name": v["name"], "label": v["label"], "type": v["type"], "hide": 0, "refresh": 1,
           "current": {}, "options": [], "includeAll": v.get("includeAll", False), "multi": False}
    if v["type"] == "datasource":
        out["query"] = v["query"]
        return out
    out.update(datasource=DS, query={"query": v["query"], "refId": v["name"]}, definition=v["query"],
               sort=1, regex="")
    if "allValue" in v:
        out["allValue"] = v["allValue"]
    return out


def _panel(pid: int, title: str, unit: str, targets: list, desc: str, x: int, y: int) -> dict:
    return {
        "id": pid, "type": "timeseries", "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": {"lineWidth": 1, "fillOpacity": 10}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                     "range": True} for i, (expr, legend) in enumerate(targets)],
    }


def build() -> dict:
    panels, y, col = [], 0, 0
    for pid, (title, unit, targets, desc) in enumerate(PANELS, start=1):
        if title.startswith("#"):
            y += 8 if col else 0
            col = 0
            panels.append({"id": pid, "type": "row", "title": title[1:].strip(), "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            y += 1
            continue
        panels.append(_panel(pid, title, unit, targets, desc, 12 * col, y))
        col = (col + 1) % 2
        y += 8 if col == 0 else 0
    return {
        "uid": UID, "title": "TensorRT-LLM Responses", "tags": ["trtllm", "llm", "responses-api"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
        "graphTooltip": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [_variable(v) for v in VARIABLES]},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed JSON, write nothing")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python dashboards/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
