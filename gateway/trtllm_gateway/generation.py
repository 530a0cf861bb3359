"""One ``POST /v1/responses`` generation, from validated request to stored response.

Protocol (docs/responses-api.md §2-§3):

1. :func:`prepare`: resolve the model (``default`` or the served id, else 404
   ``model_not_found``), load the ``previous_response_id`` history (404
   ``previous_response_not_found``), read the window as the model does
   (:func:`model_items`: ``item_reference`` items replaced by the stored items they name,
   encrypted reasoning opened), refuse images the model cannot take (the input's, those of
   referenced items included), compact it when ``context_management`` asks
   and it is over the threshold (``compaction.on_threshold``: the compaction item becomes
   the first output item, announced with the opening events), translate to a
   ``GenerateRequest``.
2. The one driver (``driver.run``) opens Generate, reads it, finalizes and persists; the
   replies here are its thin consumers: :func:`complete` (JSON) collects through
   :class:`JsonReply`, :func:`stream` (SSE, or a WebSocket's writer) sends through the
   transport's ``EventWriter``.
3. With ``store: true`` the final state is saved BEFORE the terminal event/JSON reply, so a
   client that reads ``response.completed`` can GET it at once. A JSON reply whose save
   fails is a 503 (never a 200 for something that was not stored). A stored stream logs
   every event as it is sent and ends with one fenced write of its record, last events and
   end of log (``events.ResponseLog``): ``GET ...?stream=true`` resumes it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import capabilities, compaction, compaction_item, conversations, driver, input_items, reasoning_crypto
from .context import Gateway
from .errors import ApiError
from .events import Delivery, quietly, response_log
from .ids import new_id
from .limits import off_loop_items
from .metrics import TokenClock
from .objects import new_response, stored
from .request import CreateRequest
from .sse import EventWriter
from .store import StoredResponse
from .streaming import StreamState
from .tools import call_rules
from .translate import build_chat, generate_request

log = logging.getLogger("trtllm_gateway.generation")

DEFAULT_MODEL_ALIAS = "default"


@dataclass
class Generation:
    req: CreateRequest
    tenant: str
    request: pb.GenerateRequest
    state: StreamState
    clock: TokenClock
    reserve: int
    on_finish: list[Callable[[dict], Awaitable[None]]] = field(default_factory=list)  # driver.finish_hooks


def resolve_model(name: str, info: pb.ModelInfo) -> str:
    if name in (info.model_id, DEFAULT_MODEL_ALIAS):
        return info.model_id
    raise ApiError("model_not_found", f"The model '{name}' does not exist; this server serves "
                   f"'{info.model_id}' (also reachable as '{DEFAULT_MODEL_ALIAS}').", param="model")


async def resolve_input(gw: Gateway, req: CreateRequest, tenant: str) -> None:
    """``req``'s ``item_reference`` items replaced, in ``req.input``, by the stored items they
    name (``input_items.resolve``; one store query), so the turn is stored with the items
    themselves. Nothing to do once done: every reader of the window calls this first."""
    if not req.input.references:
        return
    ids = [req.input.items[i]["id"] for i in req.input.references]
    with gw.metrics.store_op("find_items"):
        found = await gw.store.find_items(ids, tenant)
    input_items.resolve(req.input, found, gw.settings)


async def load_history(gw: Gateway, req: CreateRequest, tenant: str) -> list[dict]:
    await resolve_input(gw, req, tenant)  # first: a conversation checks the input's item ids
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


async def model_items(gw: Gateway, req: CreateRequest, tenant: str, history: list[dict]) -> list[dict]:
    """``history`` + ``req``'s input as the model reads them: item references resolved
    (:func:`resolve_input`), encrypted reasoning opened (``reasoning_crypto.reveal``; 400 for
    input content that does not open; referenced items are read as stored history), and what
    a compaction item stands for left out (``compaction_item.supersede``). Create, compact
    and input_tokens all read the window through this."""
    await resolve_input(gw, req, tenant)
    revealed = reasoning_crypto.reveal(gw.settings.reasoning_key, tenant, history, req.input.items,
                                       req.input.stored)
    return compaction_item.supersede(revealed)


async def window_chat(req: CreateRequest, items: list[dict]) -> pb.Chat:
    """``build_chat`` of a window, off the loop when the window is large (``limits``)."""
    return await off_loop_items(items, lambda: build_chat(req, items))


async def prepare(gw: Gateway, req: CreateRequest, tenant: str, arrived: float,
                  history: list[dict] | None = None, before: list[dict] | None = None) -> Generation:
    """``history`` given (a WebSocket connection's remembered turn) is used as is.
    ``before``: the output items that precede the model's, already decided (a background
    job's, from its spec); None lets ``context_management`` decide (``compaction.py``)."""
    info = await gw.client.model_info()
    model_id = resolve_model(req.model, info)
    if history is None:
        history = await load_history(gw, req, tenant)
    keys = gw.settings.reasoning_key
    items = await model_items(gw, req, tenant, history)
    check_capabilities(req, info)  # after: referenced items may bring images
    chat = await window_chat(req, items)
    if before is None:
        chat, before = await compaction.on_threshold(gw, req, tenant, items, chat)
    response_id = new_id("resp")
    state = StreamState(new_response(req, response_id, model_id, int(time.time())),
                        logprobs=req.logprobs, dialect=gw.settings.reasoning_dialect,
                        seal=reasoning_crypto.sealer(keys, tenant, req.include), **call_rules(req))
    state.output.extend(before)  # finished before the model's output: announced by streaming.start
    state.before = len(before)
    reserve = req.max_output_tokens or gw.settings.truncation_reserve_tokens
    return Generation(req, tenant, generate_request(req, chat, response_id), state,
                      TokenClock(gw.metrics, arrived), reserve)


def record(g: Generation, resp: dict) -> StoredResponse:
    """The stored record of ``resp``, generated for ``g``."""
    return stored(resp, g.tenant, g.req.input.items, g.req.previous_response_id)


async def save(gw: Gateway, g: Generation, resp: dict) -> None:
    with gw.metrics.store_op("save"):
        await gw.store.save(record(g, resp))


class JsonReply:
    """The JSON reply's sink: nothing is delivered until the end (``committed`` stays
    False), so a failure before any output is still an HTTP error."""

    committed = False

    def __init__(self, gw: Gateway, g: Generation) -> None:
        self.gw, self.g = gw, g

    async def open(self) -> None:
        pass

    async def send(self, events: list[dict]) -> None:
        pass  # the items accumulate in g.state; finalize returns them

    async def persist(self, resp: dict, closing: list[dict]) -> list[dict]:
        if not self.g.req.store:
            return closing
        try:
            await asyncio.shield(save(self.gw, self.g, resp))
        except Exception as exc:  # told "stored", the client must be able to GET it: say so
            log.exception("could not store response %s", resp["id"])
            raise ApiError("service_unavailable", "The response was generated but could not be stored, "
                           "so it is not returned; retry the request.", code="store_unavailable") from exc
        return closing

    async def deliver(self, closing: list[dict]) -> None:
        pass  # the handler returns the response object

    def abandon(self, resp: dict, closing: list[dict]) -> None:
        if self.g.req.store:
            self.gw.spawn(quietly(save(self.gw, self.g, resp), resp["id"]))


async def complete(gw: Gateway, g: Generation) -> dict:
    """The JSON reply: run the whole generation, then the finished response object."""
    return await driver.run(gw, g, JsonReply(gw, g))


async def stream(gw: Gateway, app: web.Application, g: Generation, writer: EventWriter) -> web.StreamResponse:
    """A streamed reply (``writer``: SSE, or a WebSocket's): created/in_progress, item events
    as deltas arrive, one terminal event; a stored response is also event-logged."""
    try:
        saver = (lambda resp: save(gw, g, resp)) if g.req.store else None
        await driver.run(gw, g, Delivery(gw, writer, response_log(app, g), saver))
    except ConnectionError:
        pass  # the client left before aiohttp noticed: nobody to answer (the driver saved it)
    return writer.response
