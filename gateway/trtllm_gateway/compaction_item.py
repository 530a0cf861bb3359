"""The ``compaction`` item: a model-written summary that stands in for earlier turns.

Protocol (``openai.types.responses.ResponseCompactionItem``): ``{"id": "cmp_…", "type":
"compaction", "encrypted_content": str, "created_by"?: str}``, produced by
``POST /v1/responses/compact`` (``compaction.py``) and accepted back as an input item.

``encrypted_content`` is opaque to clients. Here it is ``trtllm-compaction.v1.`` followed
by the base64url of ``{"summary": <text>}``; it is not encrypted (the summary only restates
what the same client sent), and it is not bound to one gateway replica: any replica
decodes it. Content this server did not produce (another provider's encrypted blob) is a
400 naming the item, never passed to the model as gibberish. A translated compaction item
is system context (``translate.py``): it joins the leading system message when it comes
before any conversation message, else it is a user message that says what it is.

A compaction item stands for everything before it but the leading system/developer
messages (:func:`supersede`): the model reads the window from the last compaction item on,
after those messages. So a client may keep sending the items a compaction replaced (OpenAI
documents dropping them as an optimisation, and ``previous_response_id`` chains keep
them), and the window stays compact.
"""
from __future__ import annotations

import base64
import binascii
import json

from .errors import ApiError
from .ids import new_id

PREFIX = "trtllm-compaction.v1."
CONTEXT_HEADER = "Summary of the earlier part of this conversation:\n"
LEADING_ROLES = ("system", "developer")


def leading(items: list[dict]) -> int:
    """How many items open the window as system/developer messages (the standing instructions)."""
    n = 0
    while n < len(items) and items[n].get("type") == "message" and items[n].get("role") in LEADING_ROLES:
        n += 1
    return n


def supersede(items: list[dict]) -> list[dict]:
    """``items`` without what the last compaction item stands for: the leading
    system/developer messages, then everything from the last compaction item on."""
    last = max((i for i, item in enumerate(items) if item.get("type") == "compaction"), default=None)
    if last is None:
        return items
    return items[:leading(items)] + items[last:]  # a compaction item is never a leading message


def encode(summary: str) -> str:
    raw = json.dumps({"summary": summary}, ensure_ascii=False).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).decode()


def decode(content: object) -> str | None:
    """The summary, or None when ``content`` is not a compaction this server produced."""
    if not isinstance(content, str) or not content.startswith(PREFIX):
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(content[len(PREFIX):].encode()))
    except (binascii.Error, ValueError):
        return None
    summary = value.get("summary") if isinstance(value, dict) else None
    return summary if isinstance(summary, str) else None


def new_item(summary: str) -> dict:
    """``created_by`` is left out: the schema makes it an optional string, never null."""
    return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": encode(summary)}


def normalize(item: dict, path: str, images: list[str]) -> dict:
    """``input_items.ITEM_TYPES`` entry: keep the item, refuse content we cannot read."""
    content = item.get("encrypted_content")
    if decode(content) is None:
        raise ApiError("invalid_request", f"Invalid '{path}.encrypted_content': not a compaction produced by "
                       "this server's POST /v1/responses/compact.", param=f"{path}.encrypted_content")
    given = item.get("id")
    if given is not None and (not isinstance(given, str) or not given):
        raise ApiError("invalid_request", f"Invalid '{path}.id': expected a non-empty string.", param=f"{path}.id")
    kept = {"id": given or new_id("cmp"), "type": "compaction", "encrypted_content": content}
    if isinstance(item.get("created_by"), str):
        kept["created_by"] = item["created_by"]
    return kept


def context_text(item: dict) -> str:
    """What the model reads for a (normalized, so decodable) compaction item."""
    return CONTEXT_HEADER + (decode(item["encrypted_content"]) or "")
