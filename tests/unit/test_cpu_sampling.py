"""The CPU engine's numpy sampler and prefix matching, on hand-made logits rows."""
import math

import numpy as np
import pytest

from trtllm_service.engine.base import SamplingConfig
from trtllm_service.engine.cpu_loop import common_prefix
from trtllm_service.engine.cpu_sampling import RequestSampler, RowProcessor

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


def capturing() -> tuple[list[np.ndarray], RowProcessor]:
    """A processor that records the scores it is handed (after penalties and the min_tokens mask)."""
    seen: list[np.ndarray] = []

    def record(generated, scores):
        seen.append(scores.copy())
        return scores

    return seen, record


def test_frequency_and_presence_subtract_exact_amounts_for_generated_tokens_only():
    seen, record = capturing()
    s = RequestSampler(sampling=SamplingConfig(max_tokens=5, frequency_penalty=0.5, presence_penalty=0.25),
                       prompt_ids=[1], stop_ids=frozenset(), vocab_size=VOCAB, processors=[record])
    logits = row(4.0, 3.0)
    assert [s.next_token(logits)[0] for _ in range(3)] == [0, 0, 1]
    assert seen[0][:2].tolist() == [4.0, 3.0]  # the prompt's token 1 is not penalised
    assert seen[1][:2].tolist() == [3.25, 3.0]  # 4 - 0.5 * 1 - 0.25
    assert seen[2][:2].tolist() == [2.75, 3.0]  # 4 - 0.5 * 2 - 0.25


def test_repetition_penalty_divides_positive_multiplies_negative_and_does_not_compound():
    seen, record = capturing()
    s = RequestSampler(sampling=SamplingConfig(max_tokens=5, repetition_penalty=2.0), prompt_ids=[0, 1],
                       stop_ids=frozenset(), vocab_size=VOCAB, processors=[record])
    logits = row(4.0, -1.0, 1.5)
    assert [s.next_token(logits)[0] for _ in range(2)] == [0, 0]
    assert seen[0][:3].tolist() == [2.0, -2.0, 1.5]
    assert seen[1][:3].tolist() == [2.0, -2.0, 1.5]  # once per token, however often it was seen


def test_a_seeded_request_reproduces_its_whole_sequence_whatever_runs_beside_it():
    logits = np.linspace(0, 1, VOCAB, dtype=np.float32)
    alone = sampler(stop_ids=(), temperature=0.8, seed=1234)
    first = [alone.next_token(logits)[0] for _ in range(30)]
    again, neighbour = sampler(stop_ids=(), temperature=0.8, seed=1234), sampler(stop_ids=(), temperature=0.8)
    second = []
    for _ in range(30):
        neighbour.next_token(logits)  # an unseeded request in the same batch draws in between
        second.append(again.next_token(logits)[0])
    assert second == first
    assert len(set(first)) > 3  # it really sampled


def test_temperature_sharpens_and_flattens_the_distribution():
    logits = row(1.0)
    cold = {sampler(temperature=0.05, seed=seed).next_token(logits)[0] for seed in range(100)}
    hot = {sampler(temperature=100.0, seed=seed).next_token(logits)[0] for seed in range(200)}
    assert cold == {0}  # the others are e^-20 as likely
    assert hot == set(range(VOCAB))


def test_top_k_one_is_greedy_at_any_temperature():
    logits = row(0.1, 0.3, 0.2)
    assert {sampler(temperature=5.0, top_k=1, seed=seed).next_token(logits)[0] for seed in range(50)} == {1}


def test_min_tokens_masks_the_stop_ids_when_sampling_too():
    s = sampler(temperature=1.0, seed=3, min_tokens=5)
    tokens = [s.next_token(row(0, 0, 0, 0, 0, 0, 0, 50.0))[0] for _ in range(6)]
    assert 7 not in tokens[:5] and tokens[5] == 7


def test_stop_ids_outside_the_vocabulary_are_ignored():
    s = sampler(stop_ids={7, VOCAB, 10_000}, min_tokens=1)
    assert s.next_token(row(0, 0, 0, 0, 0, 0, 0, 9.0))[0] != 7
    assert s.next_token(row(0, 0, 0, 0, 0, 0, 0, 9.0))[0] == 7


def test_plain_greedy_only_while_nothing_but_an_argmax_is_needed():
    s = sampler(min_tokens=2)
    assert not s.plain_greedy  # the stop id is masked until two tokens are out
    s.accept(3)
    assert not s.plain_greedy
    s.accept(3)
    assert s.plain_greedy and s.generated == [3, 3]
    assert sampler(stop_ids=(), min_tokens=2).plain_greedy  # no stop id to mask
    for options in ({"logprobs": 0}, {"temperature": 0.5}, {"presence_penalty": 0.1}, {"repetition_penalty": 1.1}):
        assert not sampler(**options).plain_greedy, options
    assert sampler(repetition_penalty=1.0, temperature=0.0).plain_greedy  # neutral values


def test_logprobs_top_n_are_the_most_likely_in_order_with_exact_values():
    logits = row(0.5, 2.0, 1.0, 1.5)
    norm = math.log(sum(math.exp(v) for v in logits))
    token, lp = sampler(logprobs=3).next_token(logits)
    assert token == 1 and lp.token_id == 1 and lp.logprob == pytest.approx(2.0 - norm, abs=1e-6)
    assert [t for t, _ in lp.top] == [1, 3, 2]
    assert [v for _, v in lp.top] == pytest.approx([2.0 - norm, 1.5 - norm, 1.0 - norm], abs=1e-6)
    _, zero = sampler(logprobs=0).next_token(logits)
    assert zero.top == [] and zero.logprob == pytest.approx(2.0 - norm, abs=1e-6)
    _, everything = sampler(logprobs=VOCAB).next_token(logits)
    assert sum(math.exp(v) for _, v in everything.top) == pytest.approx(1.0, abs=1e-6)


def test_the_sampled_token_has_its_logprob_even_outside_the_top_n():
    def only_four(generated, scores):
        scores[np.arange(VOCAB) != 4] = -np.inf
        return scores

    s = RequestSampler(sampling=SamplingConfig(max_tokens=4, logprobs=1), prompt_ids=[], stop_ids=frozenset(),
                       vocab_size=VOCAB, processors=[only_four])
    logits = row(3.0, 1.0)
    norm = math.log(sum(math.exp(v) for v in logits))
    token, lp = s.next_token(logits)
    assert token == 4 and lp.logprob == pytest.approx(0.0 - norm, abs=1e-6)  # raw, not the masked distribution
    assert [t for t, _ in lp.top] == [0]


@pytest.mark.parametrize("a, b, n", [([], [1], 0), ([1, 2, 3], [1, 2, 4], 2), ([1, 2], [1, 2, 3], 2),
                                     (list(range(5000)), list(range(4000)) + [0], 4000)])
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n == common_prefix(b, a)
