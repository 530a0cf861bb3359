"""The one generation driver: a ``Generate`` stream read to its end, events handed to a sink.

Protocol (docs/responses-api.md §2-§3; docs/gateway.md "One path"):

1. :func:`open_stream` starts Generate and waits for its first message, at most
   ``STREAM_START_WAIT_S``. A failure in that window (bad request, context too long, full
   queue, service down) raises, so the caller answers an HTTP error; with ``truncation:
   "auto"`` a context-length refusal drops the oldest turns (``translate.fit_context``) and
   retries once. The optimistic first try costs no CountTokens call when the prompt fits.
2. :func:`run` feeds every message through the ``streaming`` state machine and hands each
   non-empty event batch to the :class:`Sink` (SSE, WebSocket, JSON collect, a background
   job's event log, compaction). It owns the token clock (TTFT/ITL for every path), the
   active-stream gauge, the call's cancellation and the one ``finalize``.
3. The end, always in this order: ``finalize`` with its outcome; ``Sink.persist`` (the
   stored record, or one fenced write of record, last events and end of log); the finish
   hooks (a ``conversation`` turn's append, then ``Generation.on_finish``: idempotency
   record, a WebSocket's remembered turn), each failure logged; ``Sink.deliver`` of the
   closing events. So a client that reads the terminal event can GET the response, and
   its conversation, at once; and a save that fails is never answered as stored.
4. A failure after the start is a ``failed`` response, except while the sink has not
   committed anything (the JSON reply) and no output was produced: then the RPC error
   propagates, as if it had failed up front.
5. Cancellation (the client left: aiohttp cancels the handler, or the transport raises
   ConnectionError): the gRPC call is cancelled (the service aborts the engine request),
   the state is finalized ``cancelled`` with its closing events, the hooks run in the
   background and ``Sink.abandon`` persists what the sink must, then the error propagates.
6. Shutdown (``shutdown.py``) stops foreground streams still running near its deadline:
   they end ``failed`` with :data:`SHUTDOWN` through the normal end of point 3.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

import grpc

from . import conversations
from .errors import CODE_KEY, ApiError
from .streaming import finalize, on_delta, start
from .translate import fit_context

if TYPE_CHECKING:
    from .context import Gateway
    from .generation import Generation

log = logging.getLogger("trtllm_gateway.driver")

STREAM_START_WAIT_S = 0.5  # errors the service raises up front arrive well within this
EOF = grpc.aio.EOF
NO_FINAL = "The inference service ended the stream without a final message."
SHUTDOWN = "The gateway shut down before the response finished."


class Sink(Protocol):
    """Where one generation's events go. ``committed``: something was already delivered, so
    a failure must be a ``failed`` response rather than an HTTP error."""

    committed: bool

    async def open(self) -> None: ...

    async def send(self, events: list[dict]) -> None: ...

    async def persist(self, resp: dict, closing: list[dict]) -> list[dict]:
        """Store the final state; the closing events to deliver (terminal last). A failure
        the client can still be told about is raised or turned into ``response.failed``."""

    async def deliver(self, closing: list[dict]) -> None: ...

    def abandon(self, resp: dict, closing: list[dict]) -> None:
        """The consumer is gone: persist what must be, in the background (``gw.spawn``)."""


def _context_refusal(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return False
    return any(k == CODE_KEY and v == "context_length_exceeded" for k, v in exc.trailing_metadata() or ())


class Stream:
    """An open Generate call: the first (maybe pending) read, then ``call.read()``; the
    time spent waiting on the service goes to the clock (gateway overhead = total - this)."""

    def __init__(self, gw: Gateway, g: Generation) -> None:
        self.gw, self.g = gw, g
        self.call = gw.client.generate(g.request, g.req.prompt_cache_key, g.tenant)
        self.first: asyncio.Future | None = asyncio.ensure_future(self.call.read())
        self.stopped = False

    async def started(self) -> BaseException | None:
        """The error the service raised within the start window, if any."""
        first = self.first
        assert first is not None, "started() comes before the first next()"
        began = time.perf_counter()
        await asyncio.wait({first}, timeout=STREAM_START_WAIT_S)
        self.g.clock.upstream += time.perf_counter() - began
        return first.exception() if first.done() else None

    async def next(self):
        began = time.perf_counter()
        try:
            if self.first is not None:
                first, self.first = self.first, None
                return await first
            return await self.call.read()
        finally:
            self.g.clock.upstream += time.perf_counter() - began

    def take_ready(self):
        """The first message, taken, when it has already arrived and is a Delta; else None."""
        first = self.first
        if first is None or not first.done() or first.cancelled() or first.exception() is not None:
            return None
        msg = first.result()
        if msg is EOF or not msg.HasField("delta"):
            return None
        self.first = None
        return msg

    def cancel(self) -> None:
        if self.first is not None:
            self.first.cancel()
        self.call.cancel()

    def stop(self) -> None:
        """Shutdown: cancel the call; the pending read raises and the driver ends it ``failed``."""
        self.stopped = True
        self.cancel()


async def open_stream(gw: Gateway, g: Generation) -> Stream:
    """Start Generate; errors within the start window raise (-> HTTP error)."""
    stream = Stream(gw, g)
    try:
        exc = await stream.started()
        if exc is not None:
            if not (isinstance(exc, grpc.aio.AioRpcError) and g.req.truncation == "auto" and _context_refusal(exc)):
                raise exc
            g.request.chat.CopyFrom(await fit_context(g.request.chat, gw.client.count_tokens, g.reserve))
            stream = Stream(gw, g)
            exc = await stream.started()
            if exc is not None:
                raise exc
    except BaseException:
        stream.cancel()
        raise
    return stream


def failure_message(exc: grpc.aio.AioRpcError) -> str:
    return f"The inference service failed mid-response ({exc.code().name})."


async def finish_hooks(gw: Gateway, g: Generation, resp: dict) -> None:
    """The conversation append (for a ``conversation`` turn), then ``g.on_finish``; failures are logged."""
    hooks = list(g.on_finish)
    if g.req.conversation:
        hooks.insert(0, conversations.turn_appender(gw, g.tenant, g.req.conversation, g.req.input.items))
    for hook in hooks:
        try:
            await hook(resp)
        except Exception:  # the client still gets its response; the failure is logged
            log.exception("finish hook %r failed for response %s", hook, resp["id"])


async def _opening(stream: Stream, g: Generation, sink: Sink, opening: bool) -> bool:
    """Sends the opening events (``opening``) together with the first Delta's when that has
    already arrived (it usually has: ``open_stream`` waited for it), so the first output goes
    out in the same write as ``response.created``: one send, and one peer wake-up, less on
    the way to the first token. True when output was produced."""
    events = start(g.state) if opening else []
    produced = False
    if (first := stream.take_ready()) is not None:
        more = on_delta(g.state, first.delta)
        events, produced = events + more, bool(more)
    if events:
        await sink.send(events)
    if produced:
        g.clock.piece()
    return produced


async def _read(stream: Stream, g: Generation, sink: Sink, produced: bool) -> dict:
    """Reads to the end; the ``finalize`` outcome. Raises the RPC error only while nothing
    was produced and the sink has committed nothing."""
    final = None
    try:
        while (msg := await stream.next()) is not EOF:
            if msg.HasField("delta"):
                events = on_delta(g.state, msg.delta)
                if events:
                    await sink.send(events)
                    g.clock.piece()
                    produced = True
            else:
                final = msg.final
    except grpc.aio.AioRpcError as exc:
        if not (produced or sink.committed):
            raise
        return {"error": failure_message(exc)}
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not stream.stopped or (task is not None and task.cancelling()):
            raise  # the client left (or the task is being cancelled): not a shutdown stop
        if not (produced or sink.committed):
            raise ApiError("service_unavailable", "The gateway is shutting down; retry the request.") from None
        return {"error": SHUTDOWN}
    return {"final": final} if final is not None else {"error": NO_FINAL}


def _output_tokens(resp: dict) -> int:
    return (resp.get("usage") or {}).get("output_tokens", 0)


async def run(gw: Gateway, g: Generation, sink: Sink, *, opening: bool = True, foreground: bool = True) -> dict:
    """One generation through ``sink``; the final response. ``opening``: send
    ``response.created``/``in_progress`` (a background job logs its own before it opens).
    ``foreground``: shutdown stops it (``shutdown.py``); background jobs are left to their runner."""
    stream = await open_stream(gw, g)
    task = asyncio.current_task()
    if foreground and task is not None:
        gw.streams[stream] = task
    gw.metrics.active_streams.inc()
    try:
        await sink.open()
        outcome = await _read(stream, g, sink, await _opening(stream, g, sink, opening))
    except (asyncio.CancelledError, ConnectionError):
        resp, closing = finalize(g.state, cancelled=True)
        gw.spawn(finish_hooks(gw, g, resp))
        sink.abandon(resp, closing)
        g.clock.finish(0)
        raise
    finally:
        stream.cancel()  # a no-op after the end; otherwise it aborts the engine request
        gw.metrics.active_streams.dec()
        gw.streams.pop(stream, None)
    resp, closing = finalize(g.state, **outcome)
    closing = await sink.persist(resp, closing)
    await finish_hooks(gw, g, resp)
    await sink.deliver(closing)
    g.clock.finish(_output_tokens(resp))
    return resp
