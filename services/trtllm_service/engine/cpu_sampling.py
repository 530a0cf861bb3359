"""Per-request sampling for the CPU engine, over llama.cpp's logits rows, in numpy.

llama.cpp hands back one float32 row of `n_vocab` logits per request per step (a view of its
output buffer, valid until the next decode). A `RequestSampler` turns that row into the
request's next token:

1. penalties: repetition (Hugging Face semantics: over prompt + generated tokens, positive
   logits divided, negative multiplied), then frequency and presence (OpenAI semantics: over
   generated tokens, `logit - frequency * count - presence * (count > 0)`);
2. before `min_tokens` tokens, the stop ids are masked;
3. extra row processors (guided decoding plugs in here: `cpu_guided`);
4. greedy (temperature None or 0): argmax. Otherwise temperature, top_k, softmax, top_p
   (the smallest set of most likely tokens whose mass reaches top_p), min_p (tokens under
   min_p x the top probability dropped), then a draw from the request's own
   `numpy.random.Generator` (PCG64, seeded with `seed`, else from OS entropy), so a seeded
   request reproduces whatever shares its batch.

Logprobs are those of the model's raw distribution (log-softmax of the row before penalties,
temperature and truncation), as vLLM and the OpenAI API report them: the sampled token's and
the top n alternatives, most likely first.

Everything here runs on the engine's decode thread only. A plain greedy request (no
penalties, processors, logprobs or pending min_tokens) needs none of this: the loop serves
it from one batched argmax (`plain_greedy`, then `accept`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import SamplingConfig, TokenLogprobs

NEG_INF = np.float32(-np.inf)

#: A per-request logits processor: (generated ids so far, logits row) -> logits row.
RowProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]


@dataclass(eq=False)
class RequestSampler:
    """The sampling state of one request (see the module docstring)."""

    sampling: SamplingConfig
    prompt_ids: Sequence[int]
    stop_ids: frozenset[int]
    vocab_size: int
    processors: list[RowProcessor] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.sampling
        self._temperature = float(s.temperature or 0.0)
        self._rng = None if not self._temperature else np.random.default_rng(
            None if s.seed is None else int(s.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        self._stops = np.array(sorted(i for i in self.stop_ids if 0 <= i < self.vocab_size), dtype=np.int64)
        self._counts: dict[int, int] = {}
        self._uses_counts = bool(s.presence_penalty or s.frequency_penalty)
        self._seen: set[int] | None = None
        if s.repetition_penalty is not None and s.repetition_penalty != 1.0:
            self._seen = {i for i in self.prompt_ids if 0 <= i < self.vocab_size}

    @property
    def plain_greedy(self) -> bool:
        """This step is a bare argmax: a batched argmax can serve it (then call `accept`)."""
        return (self._rng is None and not self._uses_counts and self._seen is None and not self.processors
                and self.sampling.logprobs is None
                and (len(self.generated) >= self.sampling.min_tokens or not self._stops.size))

    def accept(self, token: int) -> None:
        """Record a token picked for this request outside `next_token` (a plain greedy step)."""
        self._record(token)

    def next_token(self, row: np.ndarray) -> tuple[int, TokenLogprobs | None]:
        """Pick this request's next token from its logits row (a view; never written)."""
        row = row[: self.vocab_size]
        scores = self._penalised(row)
        if len(self.generated) < self.sampling.min_tokens and self._stops.size:
            scores = scores.copy() if scores is row else scores
            scores[self._stops] = NEG_INF
        for processor in self.processors:
            scores = processor(self.generated, scores if scores is not row else row.copy())
        token = int(np.argmax(scores)) if self._rng is None else self._sample(scores, self._rng)
        logprobs = self._logprobs(row, token) if self.sampling.logprobs is not None else None
        self._record(token)
        return token, logprobs

    def _penalised(self, row: np.ndarray) -> np.ndarray:
        s = self.sampling
        if self._seen:
            ids = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
            picked = row[ids]
            row = row.copy()
            penalty = np.float32(s.repetition_penalty)
            row[ids] = np.where(picked < 0, picked * penalty, picked / penalty)
        if self._uses_counts and self._counts:
            ids = np.fromiter(self._counts, dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
            row = row.copy() if self._seen is None else row
            row[ids] -= np.float32(s.frequency_penalty or 0.0) * counts + np.float32(s.presence_penalty or 0.0)
        return row

    def _sample(self, scores: np.ndarray, rng: np.random.Generator) -> int:
        s = self.sampling
        scores = scores.astype(np.float64) / self._temperature
        ids = np.arange(scores.size)
        if s.top_k and 0 < s.top_k < scores.size:
            ids = np.argpartition(scores, -s.top_k)[-s.top_k:]
            scores = scores[ids]
        finite = np.isfinite(scores)
        if not finite.any():
            return int(ids[0])
        probs = np.exp(scores - scores[finite].max())
        probs /= probs.sum()
        if s.top_p is not None and s.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            before = np.cumsum(probs[order]) - probs[order]  # mass of the more likely tokens
            probs[order[before > s.top_p]] = 0.0  # keeps at least the most likely one
        if s.min_p:
            probs[probs < float(s.min_p) * probs.max()] = 0.0
        total = probs.sum()
        if not np.isfinite(total) or total <= 0.0:
            return int(ids[int(np.argmax(scores))])
        return int(ids[rng.choice(probs.size, p=probs / total)])

    def _logprobs(self, row: np.ndarray, token: int) -> TokenLogprobs:
        top_max = float(row.max())
        logp_norm = top_max + float(np.log(np.exp(row - top_max, dtype=np.float64).sum()))
        top: list[tuple[int, float]] = []
        n = self.sampling.logprobs or 0
        if n > 0:
            ids = np.argpartition(row, -n)[-n:]
            ids = ids[np.argsort(-row[ids], kind="stable")]
            top = [(int(i), float(row[i]) - logp_norm) for i in ids]
        return TokenLogprobs(token_id=token, logprob=float(row[token]) - logp_norm, top=top)

    def _record(self, token: int) -> None:
        self.generated.append(token)
        if self._uses_counts:
            self._counts[token] = self._counts.get(token, 0) + 1
        if self._seen is not None:
            self._seen.add(token)
