"""cpu_threads.ThreadTuner: picks the faster thread count per token bucket, re-probes stale ones."""
from __future__ import annotations

from trtllm_service.engine.cpu_threads import ThreadTuner, thread_choices


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_pass(tuner: ThreadTuner, clock: FakeClock, tokens: int, cost: dict[int, float], applied: list[int]) -> int:
    tuner.before(tokens)
    threads = applied[-1]
    clock.now += cost[threads]
    tuner.after()
    return threads


def make(probe_s: float = 10.0):
    clock, applied = FakeClock(), []
    return ThreadTuner((2, 1), probe_s=probe_s, clock=clock, apply=applied.append), clock, applied


def test_tries_every_count_then_keeps_the_fastest():
    tuner, clock, applied = make()
    used = [run_pass(tuner, clock, 8, {2: 0.03, 1: 0.05}, applied) for _ in range(6)]
    assert used[:2] == [2, 1]
    assert used[2:] == [2, 2, 2, 2]


def test_switches_when_the_other_count_becomes_faster():
    tuner, clock, applied = make(probe_s=1.0)
    for _ in range(3):
        run_pass(tuner, clock, 8, {2: 0.03, 1: 0.05}, applied)
    contended = {2: 0.4, 1: 0.06}  # another process now holds a core
    used = [run_pass(tuner, clock, 8, contended, applied) for _ in range(12)]
    assert used[-1] == 1
    assert used.count(2) < 6


def test_buckets_are_independent():
    tuner, clock, applied = make()
    for _ in range(4):
        run_pass(tuner, clock, 8, {2: 0.03, 1: 0.05}, applied)
    for _ in range(4):
        run_pass(tuner, clock, 2, {2: 0.03, 1: 0.02}, applied)
    assert tuner.choose(8) == 2
    assert tuner.choose(2) == 1
    assert tuner.bucket(1) == 1 and tuner.bucket(5) == 8 and tuner.bucket(8) == 8


def test_thread_count_is_applied_only_on_change():
    tuner, clock, applied = make()
    for _ in range(5):
        run_pass(tuner, clock, 4, {2: 0.01, 1: 0.02}, applied)
    assert applied == [2, 1, 2]


def test_thread_choices():
    assert thread_choices(2) == (2, 1)
    assert thread_choices(16) == (16, 8, 1)
    assert thread_choices(1) == (1,)


def test_large_passes_use_the_preferred_count_without_probing():
    tuner, clock, applied = make()
    assert tuner.choose(200) == 2  # nothing measured yet: all cores
    for _ in range(4):
        run_pass(tuner, clock, 8, {2: 0.4, 1: 0.05}, applied)
    assert tuner.choose(200) == 1
    run_pass(tuner, clock, 200, {2: 9.0, 1: 0.2}, applied)
    assert tuner.choose(8) == 1  # prefill timings do not enter the estimates


def test_a_new_bucket_tries_the_preferred_count_first():
    tuner, clock, applied = make()
    for _ in range(4):
        run_pass(tuner, clock, 8, {2: 0.4, 1: 0.05}, applied)
    assert tuner.choose(2) == 1
