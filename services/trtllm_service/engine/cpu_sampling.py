"""Per-request sampling for the CPU engine, run inside transformers' continuous batching.

transformers 5.23's continuous-batching manager takes ONE GenerationConfig: `do_sample`,
the RNG and the logits processors are global, its per-request kwargs cover only
temperature/top-k/top-p, and its logprobs are those of the processed distribution without
alternatives. So the engine builds the manager greedy (`do_sample=False`, no processors)
and swaps its logits-processor list for `PerRequestLogitsProcessorList`:

- `prepare_tensor_args` (called while a batch is built) records, in batch order, the
  `RequestSampler` of every request that predicts a token this step. That order is the
  order of the logits rows the model runner hands to `__call__` (rows past it are padding).
- `__call__` lets each request's sampler pick its token from its own row and returns
  scores that are -inf everywhere except 0 at the picked token, so the manager's argmax
  "samples" exactly that token.

A `RequestSampler` honours: temperature (None or 0 = greedy), top_k, top_p, min_p, seed
(its own `torch.Generator`; a request without a seed gets a random one), repetition penalty
(HF semantics, over prompt + generated tokens), presence and frequency penalties (OpenAI
semantics, over generated tokens), min_tokens (stop ids masked until reached), and extra
per-request logits processors (`processors`, the hook guided decoding plugs into).
Logprobs are those of the model's raw distribution (log-softmax of the logits before
penalties, temperature and truncation), as vLLM and the OpenAI API report them.

All of this runs on the batching thread only; `logprobs` is appended there and read by
position from the event loop (list appends are atomic under the GIL).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessorList
from transformers.generation.logits_process import LogitsProcessorList

from .base import SamplingConfig, TokenLogprobs

SAMPLER_KWARG = "sampler"
NEG_INF = float("-inf")

#: A per-request logits processor: (generated ids so far, logits row) -> logits row.
RowProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]


def is_greedy(sampling: SamplingConfig) -> bool:
    return not sampling.temperature


@dataclass(eq=False)
class RequestSampler:
    """The sampling state of one request (see the module docstring)."""

    sampling: SamplingConfig
    prompt_ids: Sequence[int]
    stop_ids: frozenset[int]
    vocab_size: int
    processors: list[RowProcessor] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Built here on the event loop: no tensor work (a vocabulary-sized fill would start an
        # OpenMP team on that thread and slow the batching thread's matmuls, see engine/cpu.py).
        # Tensors are made on the batching thread, at the first step.
        s = self.sampling
        self._generator: torch.Generator | None = None
        if not is_greedy(s):
            self._generator = torch.Generator()
            if s.seed is not None:
                self._generator.manual_seed(int(s.seed) & 0xFFFF_FFFF_FFFF_FFFF)
            else:
                self._generator.seed()
        self._stops = sorted(i for i in self.stop_ids if 0 <= i < self.vocab_size)
        self._uses_counts = bool(s.presence_penalty or s.frequency_penalty)
        self._uses_seen = s.repetition_penalty is not None and s.repetition_penalty != 1.0
        self._ready = False

    def _setup(self) -> None:
        self._stop_index = torch.tensor(self._stops, dtype=torch.long)
        self._counts: torch.Tensor | None = None  # generated-token counts (presence/frequency)
        if self._uses_counts:
            self._counts = torch.zeros(self.vocab_size, dtype=torch.float32)
        self._seen: torch.Tensor | None = None  # prompt + generated tokens (repetition penalty)
        if self._uses_seen:
            self._seen = torch.zeros(self.vocab_size, dtype=torch.bool)
            prompt = torch.tensor([i for i in self.prompt_ids if 0 <= i < self.vocab_size], dtype=torch.long)
            self._seen[prompt] = True
        self._ready = True

    @property
    def plain_greedy(self) -> bool:
        """This step is a bare argmax: the batch's argmax can serve it (then call `accept`)."""
        return (self._generator is None and not self._uses_counts and not self._uses_seen and not self.processors
                and self.sampling.logprobs is None
                and (len(self.generated) >= self.sampling.min_tokens or not self._stops))

    def accept(self, token: int) -> None:
        """Record a token picked for this request outside `next_token` (a plain greedy step)."""
        self._record(token)

    def next_token(self, logits: torch.Tensor) -> int:
        """Pick this request's next token from its float32 logits row (vocab,)."""
        if not self._ready:
            self._setup()
        logits = logits[: self.vocab_size]
        raw = logits
        scores = self._penalised(logits)
        if len(self.generated) < self.sampling.min_tokens and self._stops:
            scores = scores.clone() if scores is raw else scores
            scores[self._stop_index] = NEG_INF
        for processor in self.processors:
            scores = processor(self.generated, scores)
        token = self._argmax(scores) if self._generator is None else self._sample(scores)
        if self.sampling.logprobs is not None:
            self.logprobs.append(self._logprobs(raw, token))
        self._record(token)
        return token

    def _penalised(self, logits: torch.Tensor) -> torch.Tensor:
        s = self.sampling
        if self._seen is not None:
            penalty = float(s.repetition_penalty)
            picked = logits[self._seen]
            logits = logits.clone()
            logits[self._seen] = torch.where(picked < 0, picked * penalty, picked / penalty)
        if self._counts is not None:
            logits = logits - (s.frequency_penalty or 0.0) * self._counts
            logits = logits - (s.presence_penalty or 0.0) * (self._counts > 0).float()
        return logits

    @staticmethod
    def _argmax(scores: torch.Tensor) -> int:
        return int(torch.argmax(scores))

    def _sample(self, scores: torch.Tensor) -> int:
        s = self.sampling
        scores = scores / float(s.temperature)
        if s.top_k and 0 < s.top_k < scores.numel():
            kth = torch.topk(scores, s.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, NEG_INF)
        probs = torch.softmax(scores, dim=-1)
        if s.top_p is not None and s.top_p < 1.0:
            probs = _top_p(probs, float(s.top_p))
        if s.min_p:
            probs = probs.masked_fill(probs < float(s.min_p) * probs.max(), 0.0)
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
            return self._argmax(scores)  # every token filtered out: fall back to the best one
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _logprobs(self, raw: torch.Tensor, token: int) -> TokenLogprobs:
        logp = torch.log_softmax(raw.float(), dim=-1)
        top: list[tuple[int, float]] = []
        n = self.sampling.logprobs or 0
        if n > 0:
            values, ids = torch.topk(logp, n)
            top = list(zip(ids.tolist(), values.tolist()))
        return TokenLogprobs(token_id=token, logprob=float(logp[token]), top=top)

    def _record(self, token: int) -> None:
        if not self._ready:
            self._setup()
        self.generated.append(token)
        if self._counts is not None:
            self._counts[token] += 1.0
        if self._seen is not None:
            self._seen[token] = True


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one)."""
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    drop_sorted = cumulative - sorted_probs > top_p  # mass before this token already reached top_p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return probs.masked_fill(drop, 0.0)


class PerRequestLogitsProcessorList(ContinuousBatchingLogitsProcessorList):
    """Replaces the manager's processor list; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(LogitsProcessorList(), per_request_processors=False)
        self.do_processing = True  # makes the model runner call us on every forward pass
        self._batch: list[RequestSampler | None] = []

    def check_kwargs(self, kwargs: dict) -> None:
        sampler = kwargs.get(SAMPLER_KWARG)
        if set(kwargs) != {SAMPLER_KWARG} or not isinstance(sampler, RequestSampler):
            raise TypeError(f"requests must carry exactly one {SAMPLER_KWARG!r} kwarg (a RequestSampler)")

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        return None  # no tensor arguments

    def prepare_tensor_args(self, requests_in_batch, arg_storage: torch.Tensor) -> torch.Tensor:
        self._batch = [r.state.logit_processor_kwargs.get(SAMPLER_KWARG) for r in requests_in_batch if r.has_new_token]
        return arg_storage

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, logits_processor_args: torch.Tensor) -> torch.Tensor:
        picked = torch.full_like(scores, NEG_INF)
        # One argmax for the whole batch serves every plain greedy row (8 single-row argmaxes
        # over the vocabulary cost ~1.3 ms a step here).
        greedy = torch.argmax(scores[: len(self._batch)], dim=-1).tolist() if self._batch else []
        for row, sampler in enumerate(self._batch):
            if sampler is None:
                token = greedy[row]
            elif sampler.plain_greedy and greedy[row] < sampler.vocab_size:
                token = greedy[row]
                sampler.accept(token)
            else:
                token = sampler.next_token(scores[row])
            picked[row, token] = 0.0
        return picked
