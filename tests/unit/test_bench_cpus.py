"""`bench_gateway.py --sim --gateway-cpus` (bench_cpus.py): the CPU list it takes, and how it
splits the machine."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_cpus as bench  # scripts/ is not a package: imported by path


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), ("0-1", {0, 1}), ("0-3,6", {0, 1, 2, 3, 6}), (" 2 , 4-5 ", {2, 4, 5}), ("3-3", {3}),
])
def test_cpu_lists_in_the_kernels_format(text: str, cpus: set[int]) -> None:
    assert bench.cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", ",", "x", "1-", "-1", "3-1", "0-a", "1.5"])
def test_what_is_not_a_cpu_list(text: str) -> None:
    with pytest.raises(ValueError, match="not a CPU list"):
        bench.cpu_list(text)


def test_ranges_print_back_as_given() -> None:
    assert bench.cpu_ranges(frozenset({0, 1, 2, 6, 8, 9})) == "0-2,6,8-9"
    assert bench.cpu_list(bench.cpu_ranges(frozenset({5, 1, 3, 2}))) == {1, 2, 3, 5}


def test_the_gateway_gets_its_cpus_and_everything_else_the_rest() -> None:
    pin = bench.pinning("0-1", frozenset(range(8)))
    assert pin is not None
    assert (pin.gateway, pin.others) == ({0, 1}, {2, 3, 4, 5, 6, 7})
    assert pin.describe() == "gateway on CPUs 0-1, service and client on 2-7"
    assert bench.pinning(None, frozenset(range(8))) is None


@pytest.mark.parametrize(("text", "why"), [
    ("0-3", "leaves no CPU"), ("4", "may only use CPUs 0-3"), ("a", "not a CPU list"),
])
def test_a_split_that_cannot_work_is_refused(text: str, why: str) -> None:
    with pytest.raises(SystemExit, match=why):
        bench.pinning(text, frozenset(range(4)))
