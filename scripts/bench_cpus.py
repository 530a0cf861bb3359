"""`--gateway-cpus` of `bench_gateway.py --sim`: the gateway on some CPUs, the service and the
benchmark's client on the others, so that the gateway's cost and its worker scaling are
measured on cores nothing else uses. CPU lists are in the kernel's cpulist format (`0-3,6`,
as `taskset -c` takes); affinity is inherited, so pinning this thread while it starts a
process pins that process and every worker it starts.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

MACHINE_CPUS = frozenset(os.sched_getaffinity(0))  # before any pinning


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the gateway gets, and which the service and this client share."""

    gateway: frozenset[int]
    others: frozenset[int]

    def describe(self) -> str:
        return f"gateway on CPUs {cpu_ranges(self.gateway)}, service and client on {cpu_ranges(self.others)}"


def cpu_list(text: str) -> frozenset[int]:
    """`0-3,6` -> {0, 1, 2, 3, 6} (the kernel's cpulist format, as taskset -c takes)."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        last = last if dash else first
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise ValueError(f"not a CPU list: {text!r} (e.g. 0-1 or 0,2)")
        cpus.update(range(int(first), int(last) + 1))
    if not cpus:
        raise ValueError(f"not a CPU list: {text!r} (e.g. 0-1 or 0,2)")
    return frozenset(cpus)


def cpu_ranges(cpus: frozenset[int]) -> str:
    """{0, 1, 2, 6} -> `0-2,6`."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def pinning(gateway_cpus: str | None, available: frozenset[int] = MACHINE_CPUS) -> Pinning | None:
    """`--gateway-cpus` split against the CPUs this process may use; None when not given."""
    if not gateway_cpus:
        return None
    try:
        gateway = cpu_list(gateway_cpus)
    except ValueError as exc:
        raise SystemExit(f"--gateway-cpus: {exc}") from None
    if not gateway <= available:
        raise SystemExit(f"--gateway-cpus {gateway_cpus}: this process may only use CPUs {cpu_ranges(available)}")
    if not available - gateway:
        raise SystemExit(f"--gateway-cpus {gateway_cpus} leaves no CPU for the service and the client")
    return Pinning(gateway, available - gateway)


@contextlib.contextmanager
def on_cpus(cpus: frozenset[int] | None) -> Iterator[None]:
    """This thread, and the processes it starts meanwhile, on `cpus` (None: unchanged)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
