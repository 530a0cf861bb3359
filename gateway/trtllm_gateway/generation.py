"""One ``POST /v1/responses`` generation, from validated request to stored response.

Protocol (docs/responses-api.md §2-§3):

1. ``prepare``: resolve the model (``default`` or the served id, else 404
   ``model_not_found``), refuse images the model cannot take, load the
   ``previous_response_id`` history (404 ``previous_response_not_found``), translate to a
   ``GenerateRequest``.
2. ``open_stream``: start Generate and wait for its first message, at most
   ``STREAM_START_WAIT_S``. A failure in that window (bad request, context too long, full
   queue, service down) is an HTTP error; with ``truncation: "auto"`` a context-length
   refusal drops the oldest turns (``translate.fit_context``) and retries once. The
   optimistic first try costs no CountTokens call when the prompt fits.
3. ``complete`` (JSON) or ``stream`` (SSE) feeds deltas through ``streaming`` and finishes
   with ``streaming.finalize``; a failure after the start is ``failed``, not an HTTP error.
4. With ``store: true`` the final state is saved BEFORE the terminal event/JSON reply, so a
   client that reads ``response.completed`` can GET it at once. A stored stream also logs
   every event as it is sent (``events.py``): ``GET ...?stream=true`` resumes it.

Finish hooks: when a response ends (any status, also ``cancelled`` in the background),
``save`` first runs the conversation append of a ``conversation`` turn
(``conversations.py``), then ``Generation.on_finish`` (idempotency record, a WebSocket's
remembered turn), each failure logged, then stores the response.

Client disconnect: aiohttp cancels the handler (``handler_cancellation=True``); the
CancelledError cancels the gRPC call (the service aborts the engine request), the response
is saved as ``cancelled`` by a background task, and the error propagates.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
from aiohttp import web

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import capabilities
from . import conversations
from .context import Gateway
from .errors import ApiError, CODE_KEY
from .events import sse_writer
from .ids import new_id
from .metrics import TokenClock
from .objects import new_response
from .request import CreateRequest
from .sse import EventWriter
from .store import StoredResponse
from .streaming import StreamState, finalize, on_delta, start
from .tools import call_rules
from .translate import build_chat, fit_context, generate_request

log = logging.getLogger("trtllm_gateway.generation")

STREAM_START_WAIT_S = 0.5  # errors the service raises up front arrive well within this
DEFAULT_MODEL_ALIAS = "default"
EOF = grpc.aio.EOF


@dataclass
class Generation:
    req: CreateRequest
    tenant: str
    request: pb.GenerateRequest
    state: StreamState
    clock: TokenClock
    reserve: int
    on_finish: list[Callable[[dict], Awaitable[None]]] = field(default_factory=list)  # see save()


def resolve_model(name: str, info: pb.ModelInfo) -> str:
    if name in (info.model_id, DEFAULT_MODEL_ALIAS):
        return info.model_id
    raise ApiError("model_not_found", f"The model '{name}' does not exist; this server serves "
                   f"'{info.model_id}' (also reachable as '{DEFAULT_MODEL_ALIAS}').", param="model")


async def load_history(gw: Gateway, req: CreateRequest, tenant: str) -> list[dict]:
    if req.conversation:
        return await conversations.history(gw, req, tenant)
    if not req.previous_response_id:
        return []
    with gw.metrics.store_op("history"):
        history = await gw.store.history(req.previous_response_id, tenant)
    if history is None:
        raise ApiError("previous_response_not_found",
                       f"Previous response with id '{req.previous_response_id}' not found.",
                       param="previous_response_id")
    return history


def check_capabilities(req: CreateRequest, info: pb.ModelInfo) -> None:
    capabilities.check(req, info)


async def prepare(gw: Gateway, req: CreateRequest, tenant: str, arrived: float,
                  history: list[dict] | None = None) -> Generation:
    """``history`` given (a WebSocket connection's remembered turn) is used as is."""
    info = await gw.service.model_info()
    model_id = resolve_model(req.model, info)
    check_capabilities(req, info)
    if history is None:
        history = await load_history(gw, req, tenant)
    chat = build_chat(req, history + req.input.items)
    response_id = new_id("resp")
    state = StreamState(new_response(req, response_id, model_id, int(time.time())),
                        logprobs=req.logprobs, dialect=gw.settings.reasoning_dialect, **call_rules(req))
    reserve = req.max_output_tokens or gw.settings.truncation_reserve_tokens
    return Generation(req, tenant, generate_request(req, chat, response_id), state,
                      TokenClock(gw.metrics, arrived), reserve)


def _context_refusal(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return False
    return any(k == CODE_KEY and v == "context_length_exceeded" for k, v in exc.trailing_metadata() or ())


async def _first(gw: Gateway, g: Generation) -> tuple[grpc.aio.UnaryStreamCall, asyncio.Task]:
    call = gw.service.generate(g.request)
    return call, asyncio.ensure_future(call.read())


async def open_stream(gw: Gateway, g: Generation) -> tuple[grpc.aio.UnaryStreamCall, asyncio.Task]:
    """Start Generate; errors within the start window raise (-> HTTP error)."""
    call, first = await _first(gw, g)
    try:
        started = time.perf_counter()
        await asyncio.wait({first}, timeout=STREAM_START_WAIT_S)
        g.clock.upstream += time.perf_counter() - started
        if first.done() and first.exception() is not None:
            exc = first.exception()
            if not (isinstance(exc, grpc.aio.AioRpcError) and g.req.truncation == "auto" and _context_refusal(exc)):
                raise exc
            chat = await fit_context(g.request.chat, gw.service.count_tokens, g.reserve)
            g.request.chat.CopyFrom(chat)
            call, first = await _first(gw, g)
            await asyncio.wait({first}, timeout=STREAM_START_WAIT_S)
            if first.done() and first.exception() is not None:
                raise first.exception()
    except BaseException:
        first.cancel()
        call.cancel()
        raise
    return call, first


class StreamRun:
    """Reads the stream after open_stream: the first (maybe pending) read, then call.read()."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, first: asyncio.Task, clock: TokenClock) -> None:
        self.call, self.first, self.clock = call, first, clock

    async def next(self):
        started = time.perf_counter()
        try:
            if self.first is not None:
                task, self.first = self.first, None
                return await task
            return await self.call.read()
        finally:
            self.clock.upstream += time.perf_counter() - started


def failure_message(exc: grpc.aio.AioRpcError) -> str:
    return f"The inference service failed mid-response ({exc.code().name})."


NO_FINAL = "The inference service ended the stream without a final message."


def _output_tokens(resp: dict) -> int:
    return (resp.get("usage") or {}).get("output_tokens", 0)


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


async def save(gw: Gateway, g: Generation, resp: dict) -> None:
    await finish_hooks(gw, g, resp)
    if not g.req.store:
        return
    record = StoredResponse(id=resp["id"], tenant=g.tenant, created_at=resp["created_at"], status=resp["status"],
                            response=resp, input_items=g.req.input.items,
                            previous_response_id=g.req.previous_response_id)
    try:
        with gw.metrics.store_op("save"):
            await gw.store.save(record)
    except Exception:  # the client still gets its response; the failure is logged
        log.exception("could not store response %s", resp["id"])


def _cancelled(gw: Gateway, g: Generation, call: grpc.aio.UnaryStreamCall) -> None:
    """The client went away: abort upstream, save the partial state in the background."""
    call.cancel()
    resp, _ = finalize(g.state, None)
    gw.spawn(save(gw, g, resp))
    g.clock.finish(0)


async def complete(gw: Gateway, g: Generation) -> dict:
    """The JSON reply: run the whole generation, then the finished response object."""
    call, first = await open_stream(gw, g)
    run, final, error = StreamRun(call, first, g.clock), None, None
    gw.metrics.active_streams.inc()
    try:
        while (msg := await run.next()) is not EOF:
            if msg.HasField("delta"):
                on_delta(g.state, msg.delta)
                g.clock.piece()
            else:
                final = msg.final
    except grpc.aio.AioRpcError as exc:
        if g.clock.last_piece is None:
            raise  # nothing generated yet: an HTTP error, as if it had failed up front
        error = failure_message(exc)
    except asyncio.CancelledError:
        _cancelled(gw, g, call)
        raise
    finally:
        gw.metrics.active_streams.dec()
    resp, _ = finalize(g.state, final, error=error or (None if final is not None else NO_FINAL))
    await save(gw, g, resp)
    g.clock.finish(_output_tokens(resp))
    return resp


async def stream(gw: Gateway, request: web.Request | None, g: Generation,
                 writer: EventWriter | None = None) -> web.StreamResponse:
    """The SSE reply: created/in_progress, item events as deltas arrive, one terminal event.
    ``writer``: another transport's EventWriter (``websocket.py``); default SSE."""
    call, first = await open_stream(gw, g)
    run, final, error = StreamRun(call, first, g.clock), None, None
    writer = sse_writer(gw, request, g) if writer is None else writer
    gw.metrics.active_streams.inc()
    try:
        await writer.open()
        await writer.send_all(start(g.state))
        while (msg := await run.next()) is not EOF:
            if msg.HasField("delta"):
                events = on_delta(g.state, msg.delta)
                if events:
                    await writer.send_all(events)
                    g.clock.piece()
            else:
                final = msg.final
        resp, events = finalize(g.state, final, error=None if final is not None else NO_FINAL)
    except grpc.aio.AioRpcError as exc:
        resp, events = finalize(g.state, None, error=failure_message(exc))
    except asyncio.CancelledError:
        writer.stop_pings()
        _cancelled(gw, g, call)
        raise
    except ConnectionError:  # the client left before aiohttp noticed: nobody to answer
        writer.stop_pings()
        _cancelled(gw, g, call)
        return writer.response
    finally:
        gw.metrics.active_streams.dec()
    await save(gw, g, resp)
    await writer.send_all(events)
    await writer.close()
    g.clock.finish(_output_tokens(resp))
    return writer.response
