"""cpu_threads.ThreadTuner: picks the faster thread count per token bucket, re-probes stale ones."""
from __future__ import annotations

from trtllm_service.engine.cpu_threads import PROBE_SAMPLES, ThreadTuner, thread_choices

QUIET = {2: 0.03, 1: 0.05}
BUSY = {2: 0.4, 1: 0.06}  # another process holds a core: 2 threads collapse


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


def make(probe_s: float = 30.0):
    clock, applied = FakeClock(), []
    return ThreadTuner((2, 1), probe_s=probe_s, clock=clock, apply=applied.append), clock, applied


def probe_len() -> int:
    return PROBE_SAMPLES + 1  # the first pass of a shape is not counted


def test_probes_every_count_then_keeps_the_fastest():
    tuner, clock, applied = make()
    used = [run_pass(tuner, clock, 8, QUIET, applied) for _ in range(2 * probe_len() + 5)]
    assert used[:2 * probe_len()] == [2] * probe_len() + [1] * probe_len()
    assert used[2 * probe_len():] == [2] * 5


def test_switches_when_the_other_count_becomes_faster():
    tuner, clock, applied = make(probe_s=5.0)
    for _ in range(2 * probe_len()):
        run_pass(tuner, clock, 8, QUIET, applied)
    used = [run_pass(tuner, clock, 8, BUSY, applied) for _ in range(20)]
    assert used[-10:] == [1] * 10
    assert used.count(2) <= 3


def test_one_slow_sample_does_not_decide():
    tuner, clock, applied = make()
    costs = iter([0.03, 0.5, 0.03, 0.03] + [0.05] * probe_len())  # one hiccup while probing 2 threads
    used = []
    for _ in range(2 * probe_len() + 3):
        tuner.before(8)
        used.append(applied[-1])
        clock.now += next(costs, QUIET[applied[-1]])
        tuner.after()
    assert used[-3:] == [2, 2, 2]


def test_buckets_are_independent():
    tuner, clock, applied = make()
    for _ in range(2 * probe_len()):
        run_pass(tuner, clock, 8, QUIET, applied)
    for _ in range(2 * probe_len()):
        run_pass(tuner, clock, 2, {2: 0.03, 1: 0.02}, applied)
    assert tuner.choose(8) == 2
    assert tuner.choose(2) == 1
    assert tuner.bucket(1) == 1 and tuner.bucket(5) == 8 and tuner.bucket(8) == 8


def test_large_passes_use_the_preferred_count_without_probing():
    tuner, clock, applied = make()
    assert tuner.choose(200) == 2  # nothing measured yet: all cores
    for _ in range(2 * probe_len()):
        run_pass(tuner, clock, 8, BUSY, applied)
    assert tuner.choose(8) == 1
    assert tuner.choose(200) == 1
    run_pass(tuner, clock, 200, {2: 9.0, 1: 0.2}, applied)
    assert tuner.choose(8) == 1  # prefill timings do not enter the estimates


def test_a_new_bucket_probes_the_preferred_count_first():
    tuner, clock, applied = make()
    for _ in range(2 * probe_len()):
        run_pass(tuner, clock, 8, BUSY, applied)
    tuner.choose(8)
    assert tuner.choose(2) == 1


def test_thread_count_is_applied_only_on_change():
    tuner, clock, applied = make()
    for _ in range(2 * probe_len() + 3):
        run_pass(tuner, clock, 4, QUIET, applied)
    assert applied == [2, 1, 2]


def test_thread_choices():
    assert thread_choices(2) == (2, 1)
    assert thread_choices(16) == (16, 8, 1)
    assert thread_choices(1) == (1,)
