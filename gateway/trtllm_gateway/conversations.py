"""Conversations: durable, tenant-scoped item lists that responses read and extend.

Protocol (OpenAI Conversations API; shapes of ``openai.types.conversations``):

* a conversation is ``{"id": "conv_…", "object": "conversation", "created_at", "metadata"}``;
  deleting one answers ``{"id", "object": "conversation.deleted", "deleted": true}``;
* its items are Responses input/output items in the canonical form of ``input_items.py``
  (every item has an ``id``, unique within the conversation); at most
  :data:`MAX_ITEMS_PER_CALL` items are added per create or add-items call;
* ``conversation`` on ``POST /v1/responses`` (an id or ``{"id"}``) makes every item of the
  conversation the history of the turn (instead of ``previous_response_id``, which may not
  be sent with it) and, when the response ends ``completed`` or ``incomplete``, appends the
  turn's input items then its output items in one atomic append (:func:`turn_appender`).
  A ``failed`` or ``cancelled`` turn appends nothing, so a retry does not duplicate the
  user's message. The append happens before the terminal event or JSON reply is sent, so
  a client that has the response can list the items at once.

Other tenants' conversations are indistinguishable from absent ones (404).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .context import Gateway
from .errors import ApiError, invalid
from .ids import new_id
from .input_items import normalize_input
from .request import CreateRequest, _metadata
from .store import DuplicateItemId, StoredConversation
from .store.codec import plain_key

log = logging.getLogger("trtllm_gateway.conversations")

MAX_ITEMS_PER_CALL = 20
MAX_ITEM_ID_CHARS = 256
APPENDED_STATUSES = ("completed", "incomplete")


def now() -> int:
    return int(time.time())


def conversation_object(conv: StoredConversation) -> dict:
    return {"id": conv.id, "object": "conversation", "created_at": conv.created_at,
            "metadata": conv.metadata}


def deleted_object(conversation_id: str) -> dict:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def not_found(conversation_id: str, param: str = "conversation_id") -> ApiError:
    return ApiError("not_found", f"Conversation with id '{conversation_id}' not found.", param=param)


def _check_fields(body: dict, allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise ApiError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)


def parse_items(value: Any, param: str = "items", *, required: bool = True) -> list[dict]:
    """Canonical items for a create/add call; errors name ``items[i]…`` paths."""
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise invalid(param, f"Invalid '{param}': expected a non-empty array of items.")
    if len(value) > MAX_ITEMS_PER_CALL:
        raise invalid(param, f"Invalid '{param}': at most {MAX_ITEMS_PER_CALL} items can be added at a time.")
    try:
        items = normalize_input(value).items
    except ApiError as err:  # normalize_input names paths after `input`
        if err.param and err.param.startswith("input"):
            err.param = param + err.param[len("input"):]
        raise
    check_item_ids(items, param)
    return items


def check_item_ids(items: list[dict], param: str) -> None:
    seen: set[str] = set()
    for n, item in enumerate(items):
        item_id = item["id"]
        if not plain_key(item_id) or len(item_id) > MAX_ITEM_ID_CHARS or not item_id.isprintable():
            raise invalid(f"{param}[{n}].id", f"Invalid '{param}[{n}].id': expected at most {MAX_ITEM_ID_CHARS} "
                       "printable characters.")
        if item_id in seen:
            raise invalid(f"{param}[{n}].id", f"Duplicate item id '{item_id}' in '{param}'.")
        seen.add(item_id)


def parse_create(body: dict) -> tuple[list[dict], dict]:
    """(items, metadata) of a ``POST /v1/conversations`` body."""
    _check_fields(body, ("items", "metadata"))
    metadata = _metadata("metadata", body["metadata"]) if body.get("metadata") is not None else {}
    return parse_items(body.get("items"), required=False), metadata


def parse_update(body: dict) -> dict:
    """The metadata of a ``POST /v1/conversations/{id}`` body (required; null clears it)."""
    _check_fields(body, ("metadata",))
    if "metadata" not in body:
        raise invalid("metadata", "Missing required parameter: 'metadata'.")
    return _metadata("metadata", body["metadata"]) if body["metadata"] is not None else {}


def parse_add(body: dict) -> list[dict]:
    _check_fields(body, ("items",))
    return parse_items(body.get("items"))


def duplicate(err: DuplicateItemId, items: list[dict], param: str) -> ApiError:
    index = next((n for n, item in enumerate(items) if item["id"] == err.item_id), 0)
    return invalid(f"{param}[{index}].id", f"An item with id '{err.item_id}' is already in the conversation.")


async def create(gw: Gateway, tenant: str, items: list[dict], metadata: dict) -> dict:
    conv = StoredConversation(id=new_id("conv"), tenant=tenant, created_at=now(), metadata=metadata)
    with gw.metrics.store_op("conversation_create"):
        await gw.store.create_conversation(conv, items)
    return conversation_object(conv)


async def add_items(gw: Gateway, tenant: str, conversation_id: str, items: list[dict]) -> None:
    try:
        with gw.metrics.store_op("conversation_append"):
            found = await gw.store.append_conversation_items(conversation_id, tenant, items, now())
    except DuplicateItemId as err:
        raise duplicate(err, items, "items") from None
    if not found:
        raise not_found(conversation_id)


async def history(gw: Gateway, req: CreateRequest, tenant: str) -> list[dict]:
    """The items of ``req.conversation`` as the history of a create (checks included)."""
    if req.previous_response_id:
        raise invalid("conversation", "Mutually exclusive parameters: send either 'previous_response_id' "
                   "or 'conversation', not both.")
    conversation = req.conversation
    assert conversation, "only for a request that names a conversation (generation.load_history)"
    with gw.metrics.store_op("conversation_items"):
        items = await gw.store.conversation_items(conversation, tenant)
    if items is None:
        raise not_found(conversation, "conversation")
    check_item_ids(req.input.items, "input")
    present = {item["id"] for item in items}
    for n, item in enumerate(req.input.items):
        if item["id"] in present:
            raise invalid(f"input[{n}].id", f"An item with id '{item['id']}' is already in conversation "
                       f"'{req.conversation}'; send new items only.")
    return items


def turn_appender(gw: Gateway, tenant: str, conversation_id: str,
                  inputs: list[dict]) -> Callable[[dict], Awaitable[None]]:
    """A finish hook (``generation.Generation.on_finish``) that appends the turn."""
    async def append(resp: dict) -> None:
        if resp["status"] not in APPENDED_STATUSES:
            return
        with gw.metrics.store_op("conversation_append"):
            found = await gw.store.append_conversation_items(
                conversation_id, tenant, inputs + resp["output"], now())
        if not found:
            log.warning("conversation %s was deleted before response %s finished; turn not appended",
                        conversation_id, resp["id"])
    return append
