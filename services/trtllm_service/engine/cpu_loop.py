"""The CPU engine's decode loop: continuous batching over one llama.cpp context, on one thread.

Protocol, one iteration ("step"):
1. Take what the event loop sent (`submit`, `cancel`, `stop`), thread-safely through an inbox.
   A cancelled request leaves here, before the next decode: within one step.
2. Admit waiting requests, oldest first, while fewer than `max_running` run (one whose prompt
   prefix a running request is still prefilling waits a step, then shares it). Each gets a
   sequence slot: of the slots no running request holds, the one whose cached tokens share
   the longest prefix with the prompt (kept in place), else the least recently used one (the
   matching prefix shared into it from whichever slot holds it, running or not). The reused
   prefix is not prefilled again and is reported as `cached_tokens`.
3. Build one `llama_batch`: every decoding request's next token first, then prompt chunks of
   prefilling requests, oldest first, up to `max_step_tokens` in all. A long prompt thus
   takes several steps while running streams keep getting a token each step.
4. Decode. "No KV slot" frees room and retries: idle slots' caches first (least recently used
   first), then the newest running request is preempted (its cells dropped; it re-queues at
   the front with prompt + generated so far, and is prefilled again when re-admitted).
5. Sample each row (`cpu_sampling`; one batched argmax serves plain greedy rows), check stop
   ids and min/max tokens, and post every request's `TokenStep` of this step in one call.

Cache bookkeeping: a slot's cached tokens are those whose KV cells it holds (a running
request's `tokens[:n_past]`; an idle slot keeps its last request's). Sampled tokens join
`tokens` and are decoded in the next step, so a finished request's last token is not cached.
Slots outnumber `max_running` so idle caches survive (prefix reuse across turns). They cost:
llama.cpp attends over every cell up to the highest in use, masked or not (about 20% slower
single-stream decode with 500 idle cells, measured here), so idle caches are capped at
`idle_cache_tokens` cells (least recently used dropped first) and dropped earlier for room.
Cell use is estimated as the sum of slot lengths (shared prefixes counted twice: safe side).

Failure: a batch llama.cpp refuses (invalid, or no room with nothing else cached) fails its
requests; the loop goes on. A fatal error fails every request and ends the thread (`alive`
False: the engine reports unhealthy).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .base import EngineError, TokenStep
from .cpu_llama import DECODE_INVALID, DECODE_NO_SLOT, DECODE_OK
from .cpu_sampling import RequestSampler

log = logging.getLogger(__name__)

#: A new request waits a step for a running request's prefill when it would then share at
#: least this many more prompt tokens (see `_worth_waiting`).
SHARE_WAIT_TOKENS = 16


@dataclass(eq=False)
class Sequence:
    """One request inside the loop."""

    request_id: str
    tokens: list[int]  # prompt + generated: what the model has seen or must see next
    sampler: RequestSampler
    max_tokens: int
    prompt_len: int = 0
    slot: int = -1
    n_past: int = 0  # tokens of `tokens` whose KV cells `slot` holds
    cached: int = 0  # prompt tokens reused from the cache at first admission
    admitted_once: bool = False
    submitted: float = field(default_factory=time.monotonic)
    queue_s: float | None = None  # submit to first admission; reported on the first step

    def __post_init__(self) -> None:
        self.prompt_len = len(self.tokens)

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.n_past


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    preemptions: int = 0
    steps: int = 0


@dataclass
class _Batch:
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    fed: list[tuple[Sequence, int]] = field(default_factory=list)  # (request, tokens fed this step)
    rows: list[Sequence] = field(default_factory=list)  # requests with an output row, in row order

    def add(self, seq: Sequence, count: int) -> None:
        start = seq.n_past
        self.tokens.extend(seq.tokens[start:start + count])
        self.positions.extend(range(start, start + count))
        self.seqs.extend([seq.slot] * count)
        last = start + count == len(seq.tokens)
        self.outputs.extend([0] * (count - 1) + [int(last)])
        self.fed.append((seq, count))
        if last:
            self.rows.append(seq)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix, by binary search over slice comparisons (done in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class DecodeLoop:
    """Owns the runtime and the requests on the engine thread; see the module docstring."""

    def __init__(self, runtime, *, max_running: int, max_step_tokens: int, idle_cache_tokens: int,
                 post: Callable[[list[tuple[str, TokenStep | BaseException]]], None]) -> None:
        self.runtime = runtime
        self.max_running = max_running
        self.idle_cache_tokens = idle_cache_tokens
        self.max_step_tokens = min(max_step_tokens, runtime.batch_capacity)
        self.post = post
        self.stats = Stats()
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        n_slots = runtime.n_seq_max
        self._owner: list[Sequence | None] = [None] * n_slots
        self._cache: list[list[int]] = [[] for _ in range(n_slots)]
        self._used_at = [0] * n_slots
        self._inbox: collections.deque[tuple[str, object]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self.alive = False
        self._thread = threading.Thread(target=self._run, name="cpu-engine-decode", daemon=True)

    # ------------------------------------------------------------ event-loop side
    def start(self) -> None:
        self.alive = True
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        self._send("submit", seq)

    def cancel(self, request_id: str) -> None:
        self._send("cancel", request_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Blocking: end the thread (call it off the event loop)."""
        self._send("stop", None)
        self._thread.join(timeout)

    def _send(self, kind: str, value: object) -> None:
        self._inbox.append((kind, value))
        self._wake.set()

    @property
    def kv_used(self) -> int:
        """Estimated cells in use (see the module docstring)."""
        return sum(self._slot_len(slot) for slot in range(len(self._owner)))

    # ------------------------------------------------------------ engine thread
    def _run(self) -> None:
        error = EngineError("the CPU engine stopped")
        try:
            while not self._stopping:
                self._take_inbox()
                if not self.running and not self.waiting:
                    if not self._stopping:
                        self._wake.wait()
                        self._wake.clear()
                    continue
                self._step()
        except BaseException as exc:  # reported to every request and to health()
            log.exception("the CPU engine's decode loop failed")
            error = EngineError(f"the CPU engine failed: {exc}")
        finally:
            self.alive = False
            self._fail_all(error)

    def _take_inbox(self) -> None:
        while self._inbox:
            kind, value = self._inbox.popleft()
            if kind == "submit":
                assert isinstance(value, Sequence), "submit() sends a Sequence"
                self.waiting.append(value)
            elif kind == "cancel":
                self._drop(str(value))
            else:
                self._stopping = True

    def _drop(self, request_id: str) -> None:
        for seq in list(self.waiting):
            if seq.request_id == request_id:
                self.waiting.remove(seq)
        for seq in list(self.running):
            if seq.request_id == request_id:
                self._release(seq)

    def _fail_all(self, error: BaseException) -> None:
        doomed = [*self.running, *self.waiting]
        self.running, self.waiting = [], collections.deque()
        if doomed:
            self.post([(seq.request_id, error) for seq in doomed])

    def _step(self) -> None:
        self._admit()
        while True:
            batch = self._build()
            if not batch.fed:
                return
            code = self.runtime.decode(np.asarray(batch.tokens, dtype=np.int32),
                                       np.asarray(batch.positions, dtype=np.int32),
                                       np.asarray(batch.seqs, dtype=np.int32),
                                       np.asarray(batch.outputs, dtype=np.int8))
            if code == DECODE_OK:
                break
            if code < DECODE_INVALID:
                raise EngineError(f"llama_decode failed with code {code}")
            if code == DECODE_NO_SLOT and self._make_room():
                continue
            # nothing left to free, or a batch llama.cpp refused: those requests fail, the rest go on
            self._fail([seq for seq, _ in batch.fed], EngineError(
                "the KV cache cannot hold this request" if code == DECODE_NO_SLOT else f"llama_decode refused the "
                f"batch (code {code})"))
        self.stats.steps += 1
        for seq, count in batch.fed:
            seq.n_past += count
        self.post(self._sample(batch))

    def _fail(self, seqs: list[Sequence], error: BaseException) -> None:
        for seq in seqs:
            self._release(seq, keep_cache=False)
        self.post([(seq.request_id, error) for seq in seqs])

    # ------------------------------------------------------------ scheduling
    def _admit(self) -> None:
        deferred: list[Sequence] = []
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting.popleft()
            if self._worth_waiting(seq):
                deferred.append(seq)
                continue
            self._place(seq)
            self.running.append(seq)
        self.waiting.extendleft(reversed(deferred))

    def _worth_waiting(self, seq: Sequence) -> bool:
        """A burst of prompts with one prefix (a system prompt, an agent's instructions) would
        prefill that prefix once per request; a request whose prefix a running request is still
        prefilling waits a step and then shares its cells instead."""
        if seq.admitted_once:
            return False
        for other in self.running:
            if other.n_past < other.prompt_len:
                shared = common_prefix(other.tokens[:other.prompt_len], seq.tokens)
                if shared - other.n_past >= SHARE_WAIT_TOKENS:
                    return True
        return False

    def _place(self, seq: Sequence) -> None:
        free = [s for s, owner in enumerate(self._owner) if owner is None]
        best, best_len = -1, 0
        for slot in range(len(self._owner)):
            length = common_prefix(self._slot_tokens(slot), seq.tokens)
            if length > best_len:
                best, best_len = slot, length
        best_len = min(best_len, len(seq.tokens) - 1)  # one token must be decoded for logits
        if best in free:
            target = best
        else:
            target = min(free, key=lambda s: self._used_at[s])
            self.runtime.seq_keep_prefix(target, 0)
            if best >= 0 and best_len > 0:
                self.runtime.seq_share_prefix(best, target, best_len)
        self.runtime.seq_keep_prefix(target, best_len)
        self._owner[target], self._cache[target] = seq, []
        seq.slot, seq.n_past = target, best_len
        if not seq.admitted_once:
            seq.admitted_once, seq.cached = True, best_len
            seq.queue_s = time.monotonic() - seq.submitted
            self.stats.prompt_tokens += seq.prompt_len
            self.stats.cached_tokens += best_len

    def _release(self, seq: Sequence, keep_cache: bool = True) -> None:
        """Take `seq` off its slot; the slot keeps its cells as a cache unless told otherwise."""
        if seq in self.running:
            self.running.remove(seq)
        slot = seq.slot
        if slot < 0:
            return
        self._owner[slot] = None
        self._cache[slot] = seq.tokens[:seq.n_past] if keep_cache else []
        self._used_at[slot] = self.stats.steps
        if not keep_cache:
            self.runtime.seq_keep_prefix(slot, 0)
        seq.slot = -1
        self._trim_idle()

    def _trim_idle(self) -> None:
        """Keep at most `idle_cache_tokens` cells of idle caches, the most recently used."""
        idle = self._idle_slots()
        total = sum(len(self._cache[s]) for s in idle)
        while idle and total > self.idle_cache_tokens:
            total -= self._drop_cache(idle.pop(0))

    def _idle_slots(self) -> list[int]:
        """Slots no request holds that still cache cells, least recently used first."""
        return sorted((s for s, o in enumerate(self._owner) if o is None and self._cache[s]),
                      key=lambda s: self._used_at[s])

    def _slot_tokens(self, slot: int) -> list[int]:
        owner = self._owner[slot]
        return owner.tokens[:owner.n_past] if owner is not None else self._cache[slot]

    def _slot_len(self, slot: int) -> int:
        owner = self._owner[slot]
        return owner.n_past if owner is not None else len(self._cache[slot])

    def _build(self) -> _Batch:
        batch = _Batch()
        budget = self.max_step_tokens
        for seq in self.running:
            if seq.pending == 1:
                batch.add(seq, 1)
                budget -= 1
        for seq in self.running:
            if seq.pending > 1 and budget > 0:
                count = min(seq.pending, budget)
                batch.add(seq, count)
                budget -= count
        self._evict_for(len(batch.tokens))
        return batch

    def _evict_for(self, need: int) -> None:
        """Drop idle caches, least recently used first, until `need` more cells fit (estimate)."""
        idle = self._idle_slots()
        used = self.kv_used
        while idle and used + need > self.runtime.n_ctx:
            used -= self._drop_cache(idle.pop(0))

    def _drop_cache(self, slot: int) -> int:
        """Free an idle slot's cells; returns how many it held."""
        self.runtime.seq_keep_prefix(slot, 0)
        freed, self._cache[slot] = len(self._cache[slot]), []
        return freed

    def _make_room(self) -> bool:
        """After "no KV slot": evict an idle cache, else preempt the newest running request."""
        idle = self._idle_slots()
        if idle:
            self._drop_cache(idle[0])
            return True
        if len(self.running) < 2:
            return False
        victim = self.running[-1]
        self._release(victim, keep_cache=False)
        victim.n_past = 0
        self.waiting.appendleft(victim)
        self.stats.preemptions += 1
        log.info("KV cache full: preempted a request", extra={"request_id": victim.request_id})
        return True

    # ------------------------------------------------------------ sampling
    def _sample(self, batch: _Batch) -> list[tuple[str, TokenStep | BaseException]]:
        logits = self.runtime.logits(len(batch.rows))
        plain = [i for i, seq in enumerate(batch.rows) if seq.sampler.plain_greedy]
        greedy = dict(zip(plain, np.argmax(logits[plain], axis=1).tolist(), strict=True)) if plain else {}
        out: list[tuple[str, TokenStep | BaseException]] = []
        for i, seq in enumerate(batch.rows):
            if i in greedy and greedy[i] < seq.sampler.vocab_size:
                token, logprobs = greedy[i], None
                seq.sampler.accept(token)
            else:
                token, logprobs = seq.sampler.next_token(logits[i])
            out.append((seq.request_id, self._advance(seq, token, logprobs)))
        return out

    def _advance(self, seq: Sequence, token: int, logprobs) -> TokenStep:
        step = TokenStep(token_ids=[], cached_tokens=seq.cached, queue_s=seq.queue_s)
        seq.queue_s = None  # reported once
        generated = len(seq.tokens) - seq.prompt_len
        if token in seq.sampler.stop_ids and generated >= seq.sampler.sampling.min_tokens:
            step.finish_reason, step.stop_token_id = "stop", token
            self._release(seq)
            return step
        seq.tokens.append(token)
        step.token_ids = [token]
        step.logprobs = [logprobs] if logprobs is not None else None
        if generated + 1 >= seq.max_tokens:
            step.finish_reason = "length"
            self._release(seq)
        return step
