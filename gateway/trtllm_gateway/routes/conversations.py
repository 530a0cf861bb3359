"""``/v1/conversations`` routes (OpenAI Conversations API; logic in ``conversations.py``).

* ``POST /v1/conversations`` {items?, metadata?} -> the conversation object.
* ``GET /v1/conversations/{id}``; ``POST /v1/conversations/{id}`` {metadata} (replaces it);
  ``DELETE /v1/conversations/{id}`` -> ``conversation.deleted``.
* ``GET /v1/conversations/{id}/items`` -> a list page (``data``, ``first_id``,
  ``last_id``, ``has_more``); ``after``, ``limit`` 1..100 (default 20), ``order``
  ``asc``|``desc`` (default ``desc``); ``include`` is accepted and changes nothing (items
  are stored whole).
* ``POST /v1/conversations/{id}/items`` {items} -> a list of the items added, in order.
* ``GET /v1/conversations/{id}/items/{item_id}`` -> the item;
  ``DELETE /v1/conversations/{id}/items/{item_id}`` -> the conversation object.

Everything is scoped to the caller's tenant: another tenant's ids are 404.
"""
from __future__ import annotations

from aiohttp import web

from .. import conversations
from ..context import GATEWAY, TENANT
from ..errors import ApiError
from ..request import read_json
from ..sse import dumps
from . import limit_param


def _json(body: dict) -> web.Response:
    return web.Response(text=dumps(body), content_type="application/json")


def _item_not_found(conversation_id: str, item_id: str) -> ApiError:
    return ApiError("not_found", f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
                    param="item_id")


def _page(data: list[dict], first_id, last_id, has_more: bool) -> dict:
    return {"object": "list", "data": data, "first_id": first_id, "last_id": last_id, "has_more": has_more}


async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    items, metadata = conversations.parse_create(await read_json(request))
    return _json(await conversations.create(gw, request[TENANT], items, metadata))


async def retrieve(request: web.Request) -> web.Response:
    gw, cid = request.app[GATEWAY], request.match_info["conversation_id"]
    with gw.metrics.store_op("conversation_get"):
        conv = await gw.store.get_conversation(cid, request[TENANT])
    if conv is None:
        raise conversations.not_found(cid)
    return _json(conversations.conversation_object(conv))


async def update(request: web.Request) -> web.Response:
    gw, cid = request.app[GATEWAY], request.match_info["conversation_id"]
    metadata = conversations.parse_update(await read_json(request))
    with gw.metrics.store_op("conversation_update"):
        conv = await gw.store.update_conversation(cid, request[TENANT], metadata, conversations.now())
    if conv is None:
        raise conversations.not_found(cid)
    return _json(conversations.conversation_object(conv))


async def delete(request: web.Request) -> web.Response:
    gw, cid = request.app[GATEWAY], request.match_info["conversation_id"]
    with gw.metrics.store_op("conversation_delete"):
        found = await gw.store.delete_conversation(cid, request[TENANT])
    if not found:
        raise conversations.not_found(cid)
    return _json(conversations.deleted_object(cid))


async def list_items(request: web.Request) -> web.Response:
    gw, cid, q = request.app[GATEWAY], request.match_info["conversation_id"], request.query
    with gw.metrics.store_op("conversation_list_items"):
        page = await gw.store.list_conversation_items(cid, request[TENANT], after=q.get("after"),
                                                      limit=limit_param(q.get("limit")), order=q.get("order", "desc"))
    if page is None:
        raise conversations.not_found(cid)
    return _json(_page(page.data, page.first_id, page.last_id, page.has_more))


async def add_items(request: web.Request) -> web.Response:
    gw, cid = request.app[GATEWAY], request.match_info["conversation_id"]
    items = conversations.parse_add(await read_json(request))
    await conversations.add_items(gw, request[TENANT], cid, items)
    return _json(_page(items, items[0]["id"], items[-1]["id"], False))


async def get_item(request: web.Request) -> web.Response:
    gw, cid, item_id = request.app[GATEWAY], request.match_info["conversation_id"], request.match_info["item_id"]
    with gw.metrics.store_op("conversation_get_item"):
        item = await gw.store.get_conversation_item(cid, item_id, request[TENANT])
        if item is None and await gw.store.get_conversation(cid, request[TENANT]) is None:
            raise conversations.not_found(cid)
    if item is None:
        raise _item_not_found(cid, item_id)
    return _json(item)


async def delete_item(request: web.Request) -> web.Response:
    gw, cid, item_id = request.app[GATEWAY], request.match_info["conversation_id"], request.match_info["item_id"]
    tenant = request[TENANT]
    with gw.metrics.store_op("conversation_delete_item"):
        found = await gw.store.delete_conversation_item(cid, item_id, tenant)
        conv = await gw.store.get_conversation(cid, tenant) if found else None
    if found is None:
        raise conversations.not_found(cid)
    if not found:
        raise _item_not_found(cid, item_id)
    if conv is None:  # deleted meanwhile
        raise conversations.not_found(cid)
    return _json(conversations.conversation_object(conv))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/conversations", create)
    router.add_get("/v1/conversations/{conversation_id}", retrieve)
    router.add_post("/v1/conversations/{conversation_id}", update)
    router.add_delete("/v1/conversations/{conversation_id}", delete)
    router.add_get("/v1/conversations/{conversation_id}/items", list_items)
    router.add_post("/v1/conversations/{conversation_id}/items", add_items)
    router.add_get("/v1/conversations/{conversation_id}/items/{item_id}", get_item)
    router.add_delete("/v1/conversations/{conversation_id}/items/{item_id}", delete_item)
