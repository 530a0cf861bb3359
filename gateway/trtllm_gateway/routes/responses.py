"""``/v1/responses`` routes (OpenAI Responses API, docs/responses-api.md §1).

* ``POST /v1/responses``: create; JSON, or SSE with ``stream: true`` (``generation.py``).
* ``GET /v1/responses/{id}``: the stored response (tenant-scoped; others' ids are 404);
  ``?stream=true&starting_after=N`` replays and follows its events (``routes/background.py``).
* ``background: true`` creates are handed to ``routes/background.py`` once prepared.
* ``DELETE /v1/responses/{id}``: ``{"id", "object": "response.deleted", "deleted": true}``.
* ``GET /v1/responses/{id}/input_items``: a list page; ``after``/``before``/``limit``/``order``.
* ``POST /v1/responses/input_tokens``: ``{"object": "response.input_tokens", "input_tokens"}``
  via the service's CountTokens, over the same chat a create would send (the window read as
  ``generation.model_items`` reads it: item references resolved, encrypted reasoning opened,
  compacted turns left out). It does not compact: ``context_management`` changes nothing in
  the count.
"""
from __future__ import annotations

from aiohttp import web

from .. import generation
from ..context import ARRIVED, GATEWAY, TENANT
from ..errors import ApiError
from ..idempotency import FINISH_HOOKS
from ..objects import deleted
from ..request import read_create
from ..sse import SSEWriter, dumps
from ..translate import fit_context
from . import background as background_routes
from . import limit_param


def _json(body: dict) -> web.Response:
    return web.Response(text=dumps(body), content_type="application/json")


def _not_found(response_id: str) -> ApiError:
    return ApiError("not_found", f"Response with id '{response_id}' not found.", param="response_id")


async def create(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    body, req = await read_create(request, gw.settings)
    g = await generation.prepare(gw, req, request[TENANT], request[ARRIVED])
    g.on_finish.extend(request.get(FINISH_HOOKS, ()))  # Idempotency-Key (idempotency.py)
    if req.background:
        return await background_routes.create(request, req, g, body)
    if req.stream:
        writer = SSEWriter(request, gw.settings.ping_interval_s, defer_headers=True)  # the driver writes at once
        return await generation.stream(gw, request.app, g, writer)
    return _json(await generation.complete(gw, g))


async def retrieve(request: web.Request) -> web.StreamResponse:
    gw, response_id = request.app[GATEWAY], request.match_info["response_id"]
    if request.query.get("stream", "false").lower() == "true":
        return await background_routes.stream(request, response_id)
    with gw.metrics.store_op("get"):
        record = await gw.store.get(response_id, request[TENANT])
    if record is None:
        raise _not_found(response_id)
    return _json(record.response)


async def delete(request: web.Request) -> web.Response:
    gw, response_id = request.app[GATEWAY], request.match_info["response_id"]
    with gw.metrics.store_op("delete"):
        found = await gw.store.delete(response_id, request[TENANT])
    if not found:
        raise _not_found(response_id)
    return _json(deleted(response_id))


async def input_items(request: web.Request) -> web.Response:
    gw, response_id, q = request.app[GATEWAY], request.match_info["response_id"], request.query
    with gw.metrics.store_op("list_input_items"):
        page = await gw.store.list_input_items(response_id, request[TENANT], after=q.get("after"),
                                               before=q.get("before"), limit=limit_param(q.get("limit")),
                                               order=q.get("order", "desc"))
    if page is None:
        raise _not_found(response_id)
    return _json({"object": "list", "data": page.data, "first_id": page.first_id,
                  "last_id": page.last_id, "has_more": page.has_more})


async def input_tokens(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    _, req = await read_create(request, gw.settings, for_count=True)
    if req.model:
        generation.resolve_model(req.model, await gw.client.model_info())
    history = await generation.load_history(gw, req, request[TENANT])
    items = await generation.model_items(gw, req, request[TENANT], history)
    chat = await generation.window_chat(req, items)  # tools count too (they are in the prompt)
    if req.truncation == "auto":
        reserve = req.max_output_tokens or gw.settings.truncation_reserve_tokens
        chat = await fit_context(chat, gw.client.count_tokens, reserve)
    tokens, _ = await gw.client.count_tokens(chat)
    return _json({"object": "response.input_tokens", "input_tokens": tokens})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/responses", create)
    router.add_post("/v1/responses/input_tokens", input_tokens)
    router.add_get("/v1/responses/{response_id}", retrieve)
    router.add_delete("/v1/responses/{response_id}", delete)
    router.add_get("/v1/responses/{response_id}/input_items", input_items)
