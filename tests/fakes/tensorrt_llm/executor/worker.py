"""The fake's executor: a scheduler thread standing in for TensorRT-LLM's worker.

Mirrors, from tensorrt_llm/executor/executor.py, proxy.py and base_worker.py:
- requests are enqueued from the event-loop thread and served by a background thread,
  whose responses reach each result through a loop-bound queue (upstream: AsyncQueue);
- in-flight batching: at most `max_batch_size` requests run; the rest wait (queued);
- `_deduce_max_tokens`: a prompt longer than max_seq_len fails the request, and max_tokens
  is clamped to max_seq_len - prompt_len; these failures arrive as error responses,
  i.e. `RequestError` on the first `__anext__`, as through upstream's IPC proxy;
- `ignore_eos` disables both the end id and the stop words (upstream passes end_id=-1 and
  stop_words=[]);
- `abort_request` ends a request with a final CANCELLED response; `shutdown` aborts all;
- one stats dict per iteration, only when iteration stats are enabled (PyTorch backend:
  `enable_iter_perf_stats=True`), with the keys trtllm-serve's /metrics shows:
  numActiveRequests, numQueuedRequests, maxNumActiveRequests and kvCacheStats
  {maxNumBlocks, freeNumBlocks, usedNumBlocks, tokensPerBlock, allocTotalBlocks,
  allocNewBlocks, reusedBlocks, missedBlocks, cacheHitRate (cumulative)}.

The "model" is a deterministic token source: the tokens of SENTENCE followed by the end
id, cycled (the seed picks the starting token); with guided JSON it emits a minimal
instance of the schema. Regex and grammar guides are accepted but not enforced.
"""
from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .. import _fake
from .result import GenerationResult, IterationResult, Logprob, _Response

SENTENCE = "The quick brown fox jumps over the lazy dog."


def schema_instance(schema: Any) -> Any:
    """A minimal value that satisfies simple JSON schemas (objects, arrays, scalars, enums)."""
    if not isinstance(schema, dict):
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(sub) for name, sub in props.items()}
    return {"array": [], "string": "fake", "integer": 0, "number": 0, "boolean": True, "null": None}.get(kind, {})


class _Request:
    def __init__(self, result: GenerationResult, script: Iterator[int], max_tokens: int,
                 error: str | None, fail_after: int | None) -> None:
        self.result = result
        self.params = result.sampling_params
        self.prompt = result.prompt_token_ids
        self.script = script
        self.max_tokens = max_tokens
        self.error = error
        self.fail_after = fail_after
        self.generated: list[int] = []
        self.unsent: list[int] = []
        self.unsent_logprobs: list = []
        self.cached_tokens = 0


class FakeExecutor:
    def __init__(self, *, tokenizer, max_batch_size: int, max_seq_len: int, kv_cache_config,
                 iter_stats: bool, guided_backend: str | None) -> None:
        self._tokenizer = tokenizer
        self._max_batch_size = max_batch_size
        self._max_seq_len = max_seq_len
        self._iter_stats = iter_stats
        self._guided_backend = guided_backend
        self._sentence = tokenizer.encode(SENTENCE, add_special_tokens=False)
        self._vocab = len(tokenizer)
        self._tpb = kv_cache_config.tokens_per_block
        capacity = kv_cache_config.max_tokens or int(16384 * kv_cache_config.free_gpu_memory_fraction)
        self._max_blocks = max(1, capacity // self._tpb)
        self._reuse = kv_cache_config.enable_block_reuse
        self._stored_prefixes: set[int] = set()
        self._kv = {"allocTotalBlocks": 0, "allocNewBlocks": 0, "reusedBlocks": 0, "missedBlocks": 0}
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._cancel: set[int] = set()
        self._ids = itertools.count(1)
        self._iter = 0
        self._tokens_total = 0
        self._shutdown = False
        self._iter_stats_result: IterationResult | None = None
        self._thread = threading.Thread(target=self._run, name="fake-trtllm-scheduler", daemon=True)
        self._thread.start()

    # -- the loop-thread side ----------------------------------------------------------
    def next_request_id(self) -> int:
        return next(self._ids)

    def is_shutdown(self) -> bool:
        return self._shutdown

    def submit(self, result: GenerationResult) -> None:
        if self._iter_stats_result is None:  # upstream: _maybe_initialize_iteration_results
            self._iter_stats_result = IterationResult()
        else:
            self._iter_stats_result.mark_undone()
        params = result.sampling_params
        prompt_len = len(result.prompt_token_ids)
        error, max_tokens = self._deduce_max_tokens(prompt_len, params.max_tokens)
        if error is None and params.guided_decoding is not None and self._guided_backend is None:
            error = "guided decoding was requested but the LLM was built without guided_decoding_backend"
        fail_after, _fake.CONTROLS.fail_after_tokens = _fake.CONTROLS.fail_after_tokens, None
        _fake.CONTROLS.sampling_params.append(params)
        request = _Request(result, self._script(params), max_tokens, error, fail_after)
        with self._cond:
            self._waiting.append(request)
            self._cond.notify()

    def abort_request(self, request_id: int) -> None:
        _fake.CONTROLS.aborted_ids.append(request_id)
        with self._cond:
            self._cancel.add(request_id)
            self._cond.notify()

    def aget_stats(self, timeout: float):
        if self._iter_stats_result is None:
            return _empty_async_iterable()
        self._iter_stats_result.set_timeout(timeout)
        return self._iter_stats_result

    def shutdown(self) -> None:
        with self._cond:
            if self._shutdown:
                return
            self._shutdown = True
            for request in [*self._waiting, *self._active]:
                request.result._deliver(self._final(request, "CANCELLED"))
            self._waiting.clear()
            self._active.clear()
            self._cond.notify()
        self._thread.join(timeout=5)

    # -- the scheduler thread ----------------------------------------------------------
    def _deduce_max_tokens(self, prompt_len: int, max_tokens: int) -> tuple[str | None, int]:
        if prompt_len > self._max_seq_len:
            return (f"`prompt_token_ids` length ({prompt_len}) is greater than `max_seq_len` "
                    f"({self._max_seq_len})"), 0
        default_max_tokens = self._max_seq_len - prompt_len
        if default_max_tokens <= 0:
            return f"`default_max_tokens` ({default_max_tokens}) must be greater than 0", 0
        if max_tokens <= 0:
            return f"`max_tokens` ({max_tokens}) must be greater than 0", 0
        return None, min(max_tokens, default_max_tokens)

    def _script(self, params) -> Iterator[int]:
        guide = params.guided_decoding
        if guide is not None and (guide.json is not None or guide.json_object):
            schema = json.loads(guide.json) if isinstance(guide.json, str) else guide.json
            text = json.dumps(schema_instance(schema) if schema is not None else {})
            yield from self._tokenizer.encode(text, add_special_tokens=False)
            while True:
                yield params.end_id
        i = (params.seed or 0) % len(self._sentence)
        while True:
            yield self._sentence[i]
            i += 1
            if i == len(self._sentence):
                i = 0
                yield params.end_id

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._shutdown and not (self._waiting or self._active):
                    self._cond.wait()
                if self._shutdown:
                    return
                self._iteration()
            time.sleep(_fake.step_s())

    def _iteration(self) -> None:
        self._iter += 1
        self._cancel_requested()
        self._admit()
        for request in list(self._active):
            self._step(request)
        if self._iter_stats and self._iter_stats_result is not None:
            self._iter_stats_result._put_threadsafe(json.dumps(self._stats()))

    def _cancel_requested(self) -> None:
        for queue in (self._waiting, self._active):
            for request in [r for r in queue if r.result.request_id in self._cancel]:
                queue.remove(request)
                request.result._deliver(self._final(request, "CANCELLED"))
        self._cancel.clear()

    def _blocks(self, request: _Request) -> int:
        return math.ceil((len(request.prompt) + len(request.generated) + 1) / self._tpb)

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self._max_batch_size:
            request = self._waiting[0]
            if request.error is not None:
                self._waiting.popleft()
                request.result._deliver(_Response(request.result.request_id, [], error_msg=request.error))
                continue
            used = sum(self._blocks(r) for r in self._active)
            if self._active and used + self._blocks(request) > self._max_blocks:
                return  # stays queued until blocks free up
            self._waiting.popleft()
            self._account_prefix(request)
            self._active.append(request)

    def _account_prefix(self, request: _Request) -> None:
        full = (len(request.prompt) - 1) // self._tpb  # the last prompt token is always recomputed
        keys = [hash(tuple(request.prompt[: (b + 1) * self._tpb])) for b in range(full)]
        reused = 0
        if self._reuse:
            for key in keys:
                if key not in self._stored_prefixes:
                    break
                reused += 1
            self._stored_prefixes.update(keys)
        total = self._blocks(request)
        self._kv["reusedBlocks"] += reused
        self._kv["missedBlocks"] += total - reused
        self._kv["allocTotalBlocks"] += total
        self._kv["allocNewBlocks"] += total - reused
        request.cached_tokens = reused * self._tpb

    def _step(self, request: _Request) -> None:
        params = request.params
        if request.fail_after is not None and len(request.generated) >= request.fail_after:
            self._active.remove(request)
            request.result._deliver(_Response(request.result.request_id, [], error_msg="injected request failure"))
            return
        die_after = _fake.CONTROLS.die_after_tokens
        if die_after is not None and len(request.generated) >= die_after:
            self._die()
            return
        end_id = -1 if params.ignore_eos else params.end_id
        stop_ids = set() if params.ignore_eos else set(params.stop_token_ids or ())
        token = next(request.script)
        while token == end_id and len(request.generated) < (params.min_tokens or 0):
            token = next(request.script)
        if token == end_id:
            return self._finish(request, "END_ID")
        request.generated.append(token)
        self._tokens_total += 1
        request.unsent.append(token)
        if params.logprobs:
            request.unsent_logprobs.append(self._logprobs(token, params.logprobs))
        if token in stop_ids:
            return self._finish(request, "STOP_WORDS")
        if len(request.generated) >= request.max_tokens:
            return self._finish(request, "LENGTH")
        if request.result._streaming:
            request.result._deliver(self._flush(request, None, False))

    def _logprobs(self, token: int, k: int) -> dict[int, Logprob]:
        entries = {token: Logprob(logprob=-0.25, rank=1)}
        for j in range(1, k):
            entries.setdefault((token + j) % self._vocab, Logprob(logprob=-1.0 - j, rank=j + 1))
        return entries

    def _flush(self, request: _Request, finish: str | None, final: bool) -> _Response:
        response = _Response(request.result.request_id, request.unsent,
                             request.unsent_logprobs if request.params.logprobs else None,
                             finish, final, cached_tokens=request.cached_tokens)
        request.unsent, request.unsent_logprobs = [], []
        return response

    def _finish(self, request: _Request, finish: str) -> None:
        self._active.remove(request)
        request.result._deliver(self._flush(request, finish, True))

    def _final(self, request: _Request, finish: str) -> _Response:
        return self._flush(request, finish, True)

    def _die(self) -> None:
        self._shutdown = True
        for request in [*self._waiting, *self._active]:
            request.result._deliver(_Response(request.result.request_id, [],
                                              fatal_msg="injected executor failure"))
        self._waiting.clear()
        self._active.clear()

    def _stats(self) -> dict:
        used = sum(self._blocks(r) for r in self._active)
        hits, misses = self._kv["reusedBlocks"], self._kv["missedBlocks"]
        return {
            "iter": self._iter, "iterLatencyMS": _fake.step_s() * 1000, "cpuMemUsage": 0,
            "gpuMemUsage": 0, "numActiveRequests": len(self._active),
            "numQueuedRequests": len(self._waiting), "maxNumActiveRequests": self._max_batch_size,
            "kvCacheStats": {
                "maxNumBlocks": self._max_blocks, "freeNumBlocks": self._max_blocks - used,
                "usedNumBlocks": used, "tokensPerBlock": self._tpb, **self._kv,
                "cacheHitRate": hits / (hits + misses) if hits + misses else 0.0,
            },
        }


async def _empty_async_iterable():
    # upstream executor.empty_async_iterable: before any request there are no stats
    if False:  # pragma: no cover
        yield
