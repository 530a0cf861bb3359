"""The serving core behind `Generate`: request -> prompt ids -> engine steps -> deltas.

Per request, in order:
1. validate sampling and structured-output fields (`sampling.py`);
2. template + tokenize off the event loop (`template.py`), check the context budget;
3. admit (bounded in-flight count, else RESOURCE_EXHAUSTED);
4. a reader task iterates `engine.generate(...)`; each step's token ids go through
   detokenizer -> stop matcher -> output parser (reasoning / tool calls) into the request's
   outbox (`coalesce.py`), and the RPC's writer sends whatever is pending as one `Delta`
   each time it may send: one message per engine step while the stream keeps up, several
   steps' output in one Delta while it is behind;
5. end with exactly one `Final` (finish reason, matched stop, usage).

Cancellation: if the RPC is cancelled the writer's `await` raises CancelledError and it
cancels the reader, whose `aclosing()` closes the engine iterator; the iterator's `finally`
aborts the engine request. A stop string match also closes it early. Either way the slot is
freed within one decode step. A failure before any output propagates as an exception (a
gRPC status); after it, it becomes `Final{ERROR}` so the caller keeps what it already received.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .agentic import OutputPlanner
from .coalesce import Outbox
from .detokenize import IncrementalDetokenizer
from .engine.base import Engine, EngineError, SamplingConfig, TokenLogprobs
from .errors import QueueFull
from .metrics import ServiceMetrics
from .parsing import OutputParser, ParsedDelta
from .sampling import check_budget, sampling_config
from .stops import StopMatcher
from .template import Templater

log = logging.getLogger("trtllm_service.requests")

_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "error": pb.FINISH_REASON_ERROR,
}


@dataclass
class _Run:
    """Mutable per-request state of one Generate call."""

    request_id: str
    prompt_len: int
    detok: IncrementalDetokenizer
    stops: StopMatcher
    parser: OutputParser
    started: float
    return_token_ids: bool
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    pending_ids: list[int] = field(default_factory=list)
    pending_logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish: str | None = None
    matched_stop: str = ""
    produced: bool = False  # some output went to the outbox


class Admission:
    """Bounds in-flight requests: `limit` running plus queued, beyond that QueueFull."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> None:
        if self.in_flight >= self.limit:
            raise QueueFull(f"the service is at capacity ({self.limit} requests in flight); retry later")
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


class GenerationPipeline:
    def __init__(self, engine: Engine, templater: Templater, metrics: ServiceMetrics,
                 admission: Admission, planner: OutputPlanner, stream_interval: int = 1) -> None:
        self.stream_interval = stream_interval  # coalesce.Outbox
        self.engine = engine
        self.templater = templater
        self.metrics = metrics
        self.admission = admission
        self.planner = planner

    async def prompt_ids(self, request: pb.GenerateRequest | pb.CountTokensRequest) -> list[int]:
        return await asyncio.to_thread(self.templater.prompt_ids, request)

    async def generate(self, request: pb.GenerateRequest) -> AsyncIterator[pb.GenerateResponse]:
        started = time.monotonic()
        sampling, stops = sampling_config(request, self.engine)
        text, prompt = await asyncio.to_thread(self.templater.prompt, request)
        plan = self.planner.plan(request, text)
        sampling = dataclasses.replace(sampling, output=plan.syntax,
                                       guided=plan.guided if plan.guided is not None else sampling.guided)
        sampling = check_budget(sampling, len(prompt), self.engine.max_context_length)
        self.admission.enter()
        run = _Run(
            request_id=request.request_id or uuid.uuid4().hex, prompt_len=len(prompt),
            detok=IncrementalDetokenizer(self.templater.tokenizer, keep_special=plan.keep_special_tokens),
            stops=StopMatcher(stops), parser=plan.parser, started=started,
            return_token_ids=request.return_token_ids,
        )
        try:
            async for message in self._stream(run, prompt, sampling):
                yield message
        except asyncio.CancelledError:
            run.finish = "cancelled"
            raise
        finally:
            self.admission.leave()
            self._record(run)

    async def _stream(self, run: _Run, prompt: list[int],
                      sampling: SamplingConfig) -> AsyncIterator[pb.GenerateResponse]:
        """The writer: sends whatever the reader task has put in the outbox since the last
        message (coalesce.py), until the Final."""
        outbox = Outbox(self.stream_interval)
        reader = asyncio.create_task(self._read(run, prompt, sampling, outbox))
        try:
            while not outbox.closed:
                for message in await outbox.take():
                    yield message
        finally:
            reader.cancel()  # the engine iterator closes: its slot is freed
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, run: _Run, prompt: list[int], sampling: SamplingConfig, outbox: Outbox) -> None:
        """The reader task: engine steps -> outbox, then the tail and the Final. Failures go
        to the writer: before any output as the exception itself (a gRPC status), after it
        as Final{ERROR} so the caller keeps what it received."""
        try:
            await self._read_steps(run, prompt, sampling, outbox)
        except EngineError as exc:
            if not run.produced:
                outbox.fail(exc)
                return
            log.warning("engine failed mid-stream", extra={"request_id": run.request_id, "error": str(exc)})
            run.finish = "error"
            outbox.close(self._final(run, error=str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which raises it in the RPC
            outbox.fail(exc)
            return
        self._drain(run, outbox)
        if run.finish is None:  # the engine ended without a reason: treat as end of sequence
            run.finish = "stop"
        if run.finish == "stop" and run.parser.saw_tool_calls:
            run.finish = "tool_calls"
        outbox.close(self._final(run))

    async def _read_steps(self, run: _Run, prompt: list[int], sampling: SamplingConfig, outbox: Outbox) -> None:
        async with aclosing(self.engine.generate(run.request_id, prompt, sampling)) as steps:
            async for step in steps:
                self._timing(run, len(step.token_ids))
                if step.queue_s is not None:
                    self.metrics.queue_time.labels(self.metrics.model_name).observe(step.queue_s)
                run.cached_tokens = max(run.cached_tokens, step.cached_tokens)
                self._consume(run, step.token_ids, step.logprobs, outbox)
                if run.stops.matched is not None:
                    run.finish, run.matched_stop = "stop", run.stops.matched
                    break
                if step.finish_reason is not None:
                    run.finish = step.finish_reason
                    break

    def _timing(self, run: _Run, n_tokens: int) -> None:
        now = time.monotonic()
        if n_tokens == 0:
            return
        if run.first_token_at is None:
            run.first_token_at = now
            self.metrics.ttft.labels(self.metrics.model_name).observe(now - run.started)
        elif run.last_token_at is not None:
            per_token = (now - run.last_token_at) / n_tokens
            for _ in range(n_tokens):
                self.metrics.itl.labels(self.metrics.model_name).observe(per_token)
        run.last_token_at = now

    def _consume(self, run: _Run, ids: list[int], logprobs: list[TokenLogprobs] | None, outbox: Outbox) -> None:
        run.completion_tokens += len(ids)
        run.pending_ids.extend(ids)
        if logprobs:
            run.pending_logprobs.extend(logprobs)
        text = run.stops.feed(run.detok.push(ids))
        parsed = run.parser.feed(text) if text else ParsedDelta()
        if parsed.reasoning and not parsed.text and not parsed.tool_calls:
            run.reasoning_tokens += len(ids)
        self._delta(run, parsed, outbox)

    def _drain(self, run: _Run, outbox: Outbox) -> None:
        """Releases held-back text at the end (unless a stop string cut the output)."""
        text = "" if run.stops.matched else run.stops.feed(run.detok.flush()) + run.stops.flush()
        parsed = run.parser.feed(text) if text else ParsedDelta()
        tail = run.parser.finish()
        parsed.text += tail.text
        parsed.reasoning += tail.reasoning
        parsed.tool_calls.extend(tail.tool_calls)
        # Ids and logprobs behind no text still go out, when the caller asked for them.
        self._delta(run, parsed, outbox, force=bool(run.return_token_ids and run.pending_ids or run.pending_logprobs))

    def _delta(self, run: _Run, parsed: ParsedDelta, outbox: Outbox, force: bool = False) -> None:
        """Puts the parsed output, with the token ids and logprobs behind it, in the outbox."""
        if not parsed and not force:
            return
        ids = run.pending_ids if run.return_token_ids else []
        outbox.put(parsed, ids, [self._logprob(lp) for lp in run.pending_logprobs])
        run.produced = True
        run.pending_ids, run.pending_logprobs = [], []

    def _logprob(self, lp: TokenLogprobs) -> pb.TokenLogprob:
        token = self._token_text(lp.token_id)
        out = pb.TokenLogprob(token=token, logprob=lp.logprob, bytes=token.encode("utf-8", "replace"))
        for tid, value in lp.top:
            text = self._token_text(tid)
            out.top_logprobs.add(token=text, logprob=value, bytes=text.encode("utf-8", "replace"))
        return out

    def _token_text(self, token_id: int) -> str:
        return self.templater.tokenizer.decode([token_id], skip_special_tokens=False)

    def _final(self, run: _Run, error: str = "") -> pb.GenerateResponse:
        usage = pb.Usage(prompt_tokens=run.prompt_len, completion_tokens=run.completion_tokens,
                         cached_tokens=run.cached_tokens, reasoning_tokens=run.reasoning_tokens)
        final = pb.Final(finish_reason=_FINISH[run.finish or "stop"], matched_stop=run.matched_stop,
                         usage=usage, error_message=error)
        return pb.GenerateResponse(final=final)

    def _record(self, run: _Run) -> None:
        m, name = self.metrics, self.metrics.model_name
        reason = run.finish or "error"
        m.finished.labels(name, reason).inc()
        m.prompt_tokens.labels(name).inc(run.prompt_len)
        m.generation_tokens.labels(name).inc(run.completion_tokens)
        elapsed = time.monotonic() - run.started
        m.e2e.labels(name).observe(elapsed)
        ttft = None if run.first_token_at is None else round(run.first_token_at - run.started, 4)
        log.info("request finished", extra={
            "request_id": run.request_id, "finish_reason": reason, "prompt_tokens": run.prompt_len,
            "completion_tokens": run.completion_tokens, "ttft_s": ttft, "e2e_s": round(elapsed, 4)})
