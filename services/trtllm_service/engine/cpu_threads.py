"""Adaptive torch thread count for the CPU engine's forward passes (used when --cpu-threads is unset).

Why: OpenMP parallel regions wait for every worker thread. On a small machine whose cores
other processes also use, a worker is often descheduled and each of the ~250 regions of a
forward pass waits a scheduler time slice. Measured on this 2-core machine, 8-row forward
of SmolLM2-135M's matmuls: 2 threads 34 ms when quiet but 70-500 ms while another process
kept a core busy, where 1 thread took 24-50 ms. Neither count wins everywhere, so we measure.

Protocol: a forward pre-hook sets the thread count for the pass, a forward hook records its
wall time. Only small passes (decode steps, at most `PROBE_MAX_TOKENS` tokens) are measured,
grouped by token count (power-of-two buckets); each (bucket, threads) keeps the median of a
probe's samples, then a moving average. A small pass runs with the count whose average is lowest, except that a count
with fewer than `PROBE_SAMPLES` samples, or last measured over `probe_s` ago, is probed (the
preferred count first; the first pass of a new shape is not counted): a change of load is
noticed within `probe_s`, and a probe costs `PROBE_SAMPLES` decode steps. Larger passes (prefill
chunks) just use the count last preferred: probing them under contention could stall for
seconds. All of it runs on the batching thread, the only thread that runs forwards.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

PROBE_MAX_TOKENS = 16
PROBE_SAMPLES = 3


@dataclass(frozen=True)
class _Estimate:
    seconds: float  # median of the probe, then a moving average
    samples: int
    at: float  # last update
    probe: tuple[float, ...]  # the probe's samples, while it runs


class ThreadTuner:
    """Chooses among `choices` thread counts per token bucket; see the module docstring."""

    def __init__(self, choices: tuple[int, ...], probe_s: float = 30.0, alpha: float = 0.3,
                 clock: Callable[[], float] = time.perf_counter,
                 apply: Callable[[int], None] = torch.set_num_threads) -> None:
        self.choices = tuple(sorted(set(choices), reverse=True))
        self.probe_s, self.alpha, self._clock, self._apply = probe_s, alpha, clock, apply
        self._estimates: dict[tuple[int, int], _Estimate] = {}
        self._warm: set[tuple[int, int]] = set()
        self._current: int | None = None
        self._preferred = self.choices[0]
        self._pending: tuple[int, int, float] | None = None  # (tokens, threads, started)

    @staticmethod
    def bucket(tokens: int) -> int:
        return 1 << max(0, int(tokens) - 1).bit_length()

    def choose(self, tokens: int) -> int:
        if tokens > PROBE_MAX_TOKENS:
            return self._preferred
        bucket, now = self.bucket(tokens), self._clock()
        order = sorted(self.choices, key=lambda t: t != self._preferred)
        unsure = [t for t in order if not self._trusted(self._estimates.get((bucket, t)), now)]
        if unsure:
            return unsure[0]
        self._preferred = min(self.choices, key=lambda t: self._estimates[(bucket, t)].seconds)
        return self._preferred

    def _trusted(self, estimate: "_Estimate | None", now: float) -> bool:
        return estimate is not None and estimate.samples >= PROBE_SAMPLES and now - estimate.at <= self.probe_s

    def record(self, tokens: int, threads: int, seconds: float) -> None:
        if tokens > PROBE_MAX_TOKENS:
            return
        key, now = (self.bucket(tokens), threads), self._clock()
        if key not in self._warm:  # the first pass of a shape pays one-time costs
            self._warm.add(key)
            return
        old = self._estimates.get(key)
        if old is None or now - old.at > self.probe_s:
            self._estimates[key] = _Estimate(seconds, 1, now, (seconds,))
        elif old.samples < PROBE_SAMPLES:  # a probe: the median of its samples ignores one hiccup
            probe = old.probe + (seconds,)
            self._estimates[key] = _Estimate(statistics.median(probe), len(probe), now, probe)
        else:
            self._estimates[key] = _Estimate((1 - self.alpha) * old.seconds + self.alpha * seconds,
                                             old.samples + 1, now, ())

    def before(self, tokens: int) -> None:
        threads = self.choose(tokens)
        if threads != self._current:
            self._apply(threads)
            self._current = threads
        self._pending = (tokens, threads, self._clock())

    def after(self) -> None:
        if self._pending is not None:
            tokens, threads, started = self._pending
            self._pending = None
            self.record(tokens, threads, self._clock() - started)

    def attach(self, model: nn.Module) -> list:
        """Hook the model's forward; returns the hook handles."""
        def pre(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.before(int(ids.numel()) if ids is not None else 1)

        def post(module, args, output):
            self.after()

        return [model.register_forward_pre_hook(pre, with_kwargs=True), model.register_forward_hook(post)]


def thread_choices(cores: int) -> tuple[int, ...]:
    """All cores, half of them and one: the counts worth comparing."""
    return tuple(sorted({cores, max(1, cores // 2), 1}, reverse=True))
