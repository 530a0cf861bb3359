"""What a metrics module really exports: series names and their label names.

Reads the prometheus_client objects the module declares, in its own registries (a module-level
CollectorRegistry, or a `registry` attribute of a metrics class built with no arguments) or as
module-level metric objects. Series names follow the exposition format: a counter `x` is
scraped as `x_total`, a histogram as `x_bucket` (with `le`), `x_sum` and `x_count`.
"""
from __future__ import annotations

import importlib
import inspect
from types import ModuleType

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

# type -> [(series suffix, extra labels)]
_SERIES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "counter": [("_total", ()), ("_created", ())],
    "gauge": [("", ())],
    "histogram": [("_bucket", ("le",)), ("_sum", ()), ("_count", ()), ("_created", ())],
    "summary": [("", ("quantile",)), ("_sum", ()), ("_count", ()), ("_created", ())],
    "info": [("_info", ())],
    "enum": [("", ())],
}


def _registries(mod: ModuleType) -> list[CollectorRegistry]:
    found = [v for v in vars(mod).values() if isinstance(v, CollectorRegistry)]
    for cls in vars(mod).values():
        if not (inspect.isclass(cls) and cls.__module__ == mod.__name__):
            continue
        try:
            instance = cls()
        except TypeError:  # needs arguments: not a metrics holder we can build
            continue
        registry = getattr(instance, "registry", None)
        if isinstance(registry, CollectorRegistry):
            found.append(registry)
    return found


def _metric_objects(mod: ModuleType) -> list[MetricWrapperBase]:
    metrics = [v for v in vars(mod).values() if isinstance(v, MetricWrapperBase)]
    for registry in _registries(mod):
        # prometheus_client keeps no public list of a registry's collectors.
        metrics += [c for c in registry._collector_to_names if isinstance(c, MetricWrapperBase)]
    return metrics


def exported_series(module_name: str) -> dict[str, set[str]]:
    """{series name: label names} for every metric the module declares."""
    mod = importlib.import_module(module_name)
    out: dict[str, set[str]] = {}
    for metric in _metric_objects(mod):
        for suffix, extra in _SERIES[metric._type]:
            out[metric._name + suffix] = set(metric._labelnames) | set(extra)
    return out
