"""Every metric the dashboard, the alerts and the autoscaler query is one the code exports.

The names are read from the PromQL in the shipped dashboard JSON (panels and template
variables), the rendered PrometheusRule and the KEDA trigger; the exported names come from the
prometheus_client registries of `trtllm_service.metrics` and `trtllm_gateway.metrics`. Labels
used in selectors and groupings must exist on the metric or be added by the scrape.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys

import grpc
import pytest

from .chart import ROOT, one
from .exported import exported_series
from .promql import Refs, refs

DASHBOARD = ROOT / "helm" / "trtllm-responses" / "dashboards" / "trtllm-responses.json"

# tier -> (module that declares its metrics, prefixes of its series)
TIERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "service": ("trtllm_service.metrics", ("trtllm:", "grpc_server_")),
    "gateway": ("trtllm_gateway.metrics", ("trtllm_gateway_",)),
}
# Series from other exporters the alerts rely on: Prometheus itself and kube-state-metrics.
EXTERNAL = {"up": {"namespace", "service", "pod", "job", "instance"},
            "kube_deployment_status_replicas_available": {"namespace", "deployment"}}
# Labels the ServiceMonitor scrape adds to every series.
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "container", "endpoint"}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def _chart_exprs(multi_docs: list[dict]) -> list[str]:
    rule = one(multi_docs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    return exprs + [t["metadata"]["query"] for t in one(multi_docs, "ScaledObject")["spec"]["triggers"]]


@pytest.fixture(scope="module")
def queries(multi_docs: list[dict]) -> list[tuple[str, Refs]]:
    exprs = _dashboard_exprs() + _chart_exprs(multi_docs)
    assert len(exprs) >= 40
    return [(e, refs(e)) for e in exprs]


def _tier(name: str) -> str | None:
    return next((t for t, (_m, prefixes) in TIERS.items() if name.startswith(prefixes)), None)


def test_every_queried_metric_belongs_to_a_known_exporter(queries: list[tuple[str, Refs]]) -> None:
    names = set().union(*(r.metrics for _e, r in queries))
    unknown = sorted(n for n in names if _tier(n) is None and n not in EXTERNAL)
    assert not unknown, f"metrics from no known exporter: {unknown}"
    for tier in TIERS:  # both tiers are really covered by the dashboard/alerts
        assert any(_tier(n) == tier for n in names)


def _exported_or_skip(module: str) -> dict[str, set[str]]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet: its metric names cannot be checked")
    series = exported_series(module)
    assert series, f"{module} declares no prometheus_client metric we can find"
    return series


def _problems(tier: str, queries: list[tuple[str, Refs]]) -> list[str]:
    """Names and labels in `queries` that the tier's metrics module does not export."""
    module, _prefixes = TIERS[tier]
    exported = _exported_or_skip(module)
    known = {**{n: labels | TARGET_LABELS for n, labels in exported.items()}, **EXTERNAL}
    problems: list[str] = []
    for _expr, r in queries:
        mine = {n for n in r.metrics if _tier(n) == tier}
        if not mine:
            continue
        problems += [f"{n} is not exported by {module}" for n in sorted(mine - known.keys())]
        problems += [f"{n} has no label {lab!r}" for n, lab in sorted(r.matched)
                     if n in mine and n in known and lab not in known[n]]
        available = set().union(*(known.get(n, set()) for n in r.metrics))
        problems += [f"grouping label {lab!r} exists on none of {sorted(r.metrics)}"
                     for lab in sorted(r.grouped - available)]
    return sorted(set(problems))


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_queried_metrics_and_labels_are_exported(tier: str, queries: list[tuple[str, Refs]]) -> None:
    problems = _problems(tier, queries)
    assert not problems, "\n".join(problems)


def test_the_check_reports_unknown_names_and_labels() -> None:
    """Negative control: a misspelt metric, a wrong label and a wrong grouping are each caught."""
    bad = ['sum(trtllm:num_requests_queued{namespace="x"})',
           'max(trtllm:kv_cache_usage_perc{replica="r"})',
           'histogram_quantile(0.9, sum by (le, code) (rate(grpc_server_handling_seconds_bucket[5m])))']
    problems = _problems("service", [(e, refs(e)) for e in bad])
    assert len(problems) == 3, problems
    assert any("trtllm:num_requests_queued" in p for p in problems)
    assert any("'replica'" in p for p in problems) and any("'code'" in p for p in problems)


def test_grpc_code_matchers_use_the_codes_the_service_exports(queries: list[tuple[str, Refs]]) -> None:
    """The service labels grpc_code with grpc.StatusCode names (OK, UNAVAILABLE, ...)."""
    names = {code.name for code in grpc.StatusCode}
    used = [v for e, _r in queries for v in re.findall(r'grpc_code=~?"([^"]+)"', e)]
    assert used, "no query filters on grpc_code"
    for alternation in used:
        assert set(alternation.split("|")) <= names, alternation


def test_committed_dashboard_is_what_the_generator_builds() -> None:
    sys.path.insert(0, str(ROOT / "dashboards"))
    try:
        import build_dashboard
    finally:
        sys.path.remove(str(ROOT / "dashboards"))
    assert DASHBOARD.read_text() == build_dashboard.render(), "run python dashboards/build_dashboard.py"


def test_dashboard_ships_as_a_grafana_sidecar_configmap(rendered: list[dict]) -> None:
    cm = one(rendered, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["trtllm-responses.json"])
    assert dash == json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    for needed in ("Queue vs running", "KV-cache utilisation per replica", "Gateway overhead",
                   "Active streams per gateway pod", "Tokens/s", "Engine time to first token"):
        assert needed in titles
