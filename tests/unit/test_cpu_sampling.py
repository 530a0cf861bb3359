"""The CPU engine's numpy sampler and prefix matching, on hand-made logits rows."""
import math

import numpy as np
import pytest

from trtllm_service.engine.base import SamplingConfig
from trtllm_service.engine.cpu_loop import common_prefix
from trtllm_service.engine.cpu_sampling import RequestSampler

VOCAB = 8


def sampler(stop_ids=frozenset({7}), prompt=(), **sampling) -> RequestSampler:
    return RequestSampler(sampling=SamplingConfig(max_tokens=10, **sampling), prompt_ids=list(prompt),
                          stop_ids=frozenset(stop_ids), vocab_size=VOCAB)


def row(*values: float) -> np.ndarray:
    return np.array(values + (0.0,) * (VOCAB - len(values)), dtype=np.float32)


def test_greedy_takes_the_argmax_and_never_writes_the_row():
    logits = row(1, 5, 2)
    before = logits.copy()
    s = sampler()
    assert s.plain_greedy
    assert s.next_token(logits)[0] == 1
    assert np.array_equal(logits, before)


def test_min_tokens_masks_stop_ids_until_reached():
    s = sampler(min_tokens=2)
    assert not s.plain_greedy
    logits = row(0, 1, 0, 0, 0, 0, 0, 9)
    assert s.next_token(logits)[0] == 1
    assert s.next_token(logits)[0] == 1
    assert s.next_token(logits)[0] == 7


def test_presence_and_frequency_penalties_count_generated_tokens():
    s = sampler(presence_penalty=1.0, frequency_penalty=1.0)
    logits = row(3.0, 2.5)
    assert [s.next_token(logits)[0] for _ in range(2)] == [0, 1]  # 3.0 - 2 < 2.5


def test_repetition_penalty_covers_the_prompt():
    s = sampler(prompt=[0], repetition_penalty=2.0)
    assert s.next_token(row(3.0, 2.0))[0] == 1  # 3.0 / 2 < 2.0


def test_seeded_sampling_reproduces_and_seeds_differ():
    logits = np.linspace(0, 1, VOCAB, dtype=np.float32)
    draws = [[sampler(temperature=1.0, seed=seed).next_token(logits)[0] for _ in range(1)] for seed in range(40)]
    again = [[sampler(temperature=1.0, seed=seed).next_token(logits)[0] for _ in range(1)] for seed in range(40)]
    assert draws == again
    assert len({d[0] for d in draws}) > 2


@pytest.mark.parametrize("options, allowed", [
    ({"top_k": 2}, {0, 1}),
    ({"top_p": 0.35}, {0}),
    ({"top_p": 0.5}, {0, 1}),  # 0.4 alone does not reach 0.5
    ({"min_p": 0.5}, {0, 1}),
])
def test_truncation_keeps_only_the_allowed_tokens(options, allowed):
    logits = np.log(np.array([0.4, 0.3, 0.1, 0.1, 0.05, 0.05, 1e-9, 1e-9], dtype=np.float32))
    seen = {sampler(temperature=1.0, seed=seed, **options).next_token(logits)[0] for seed in range(200)}
    assert seen == allowed


def test_logprobs_are_of_the_raw_distribution_with_sorted_alternatives():
    logits = row(2.0, 1.0, 0.5)
    token, lp = sampler(logprobs=2, presence_penalty=5.0).next_token(logits)
    norm = math.log(sum(math.exp(v) for v in logits))
    assert token == 0
    assert lp.logprob == pytest.approx(2.0 - norm, abs=1e-5)
    assert [t for t, _ in lp.top] == [0, 1]
    assert lp.top[1][1] == pytest.approx(1.0 - norm, abs=1e-5)


def test_processors_see_generated_tokens_and_may_mask():
    calls = []

    def only_odd(generated, scores):
        calls.append(list(generated))
        scores[::2] = -np.inf
        return scores

    s = RequestSampler(sampling=SamplingConfig(max_tokens=4), prompt_ids=[], stop_ids=frozenset(), vocab_size=VOCAB,
                       processors=[only_odd])
    logits = row(9, 1, 8, 2)
    assert [s.next_token(logits)[0] for _ in range(2)] == [3, 3]
    assert calls == [[], [3]]
    assert logits[0] == 9  # the engine's row is never written


@pytest.mark.parametrize("a, b, n", [([], [1], 0), ([1, 2, 3], [1, 2, 4], 2), ([1, 2], [1, 2, 3], 2),
                                     (list(range(5000)), list(range(4000)) + [0], 4000)])
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n == common_prefix(b, a)
