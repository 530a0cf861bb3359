"""The gateway's ``--workers`` in the chart (``gateway.workers``, else the container's CPU limit,
or its request without a limit, rounded down, at least 1) and its ``--event-log``
(``gateway.eventLog``); the arguments are parsed by the real settings parser."""
from __future__ import annotations

import pytest

from trtllm_gateway.settings import build_parser as gateway_parser

from .chart import HelmFailed, container, one, template


def _workers(docs: list[dict]) -> int:
    gateway = container(one(docs, "Deployment", "gateway"), "gateway")
    return gateway_parser().parse_args(gateway["args"]).workers


@pytest.mark.parametrize("sets, extra, expected", [
    ({}, [], 1),  # the default values: no CPU limit, a request of 500m
    ({"gateway.resources.limits.cpu": "2"}, [], 2),
    ({"gateway.resources.limits.cpu": "4500m"}, [], 4),
    ({"gateway.resources.limits.cpu": "250m"}, [], 1),
    ({"gateway.resources.limits.cpu": "2.5"}, [], 2),
    ({}, ["--set-json", 'gateway.resources={"limits": {"cpu": 6}, "requests": {"cpu": 1}}'], 6),
    ({"gateway.resources.requests.cpu": "3"}, [], 3),
    ({}, ["--set-json", "gateway.resources=null"], 1),
    ({"gateway.workers": "3", "gateway.resources.limits.cpu": "8"}, [], 3),
], ids=["default", "limit-2", "limit-4500m", "limit-250m", "limit-2.5", "limit-number", "request-3", "none",
        "explicit"])
def test_gateway_workers_follow_the_cpu_limit(helm: str, sets: dict[str, str], extra: list[str],
                                               expected: int) -> None:
    assert _workers(template(helm, sets=sets, extra=extra)) == expected


def test_a_cpu_quantity_the_chart_cannot_count_is_refused(helm: str) -> None:
    with pytest.raises(HelmFailed, match="set gateway.workers"):
        template(helm, sets={"gateway.resources.limits.cpu": "2k"})
    assert _workers(template(helm, sets={"gateway.resources.limits.cpu": "2k", "gateway.workers": "2"})) == 2


@pytest.mark.parametrize("sets, expected", [({}, "stored"), ({"gateway.eventLog": "background"}, "background")])
def test_the_event_log_setting_reaches_the_gateway(helm: str, sets: dict[str, str], expected: str) -> None:
    gateway = container(one(template(helm, sets=sets), "Deployment", "gateway"), "gateway")
    assert gateway_parser().parse_args(gateway["args"]).event_log == expected


def test_an_unknown_event_log_is_refused_by_the_values_schema(helm: str) -> None:
    with pytest.raises(HelmFailed, match="eventLog"):
        template(helm, sets={"gateway.eventLog": "everything"})


def test_negative_workers_are_refused_by_the_values_schema(helm: str) -> None:
    with pytest.raises(HelmFailed, match="workers"):
        template(helm, sets={"gateway.workers": "-1"})
