"""Backend-neutral encoding of conversations, conversation items and idempotency records.

Rows (same layout in SQLite and PostgreSQL, see ``sqlite_conversations.py`` and
``postgres_conversations.py``):

* ``conversations``: id, tenant, created_at, updated_at (last append or metadata change,
  unix seconds; retention purges idle conversations by it), next_position (the position the
  next appended item gets, so positions only grow and deleted items leave gaps) and
  metadata (JSON object of strings);
* ``conversation_items``: one row per item, keyed by (conversation, position), with the
  item id unique within its conversation (ids are pagination cursors);
* ``idempotency_keys``: (tenant, key) -> hash of the request body, state
  ``running``/``done``, the finished response object (JSON) and when the key was claimed.

JSON is written with ``ensure_ascii=True``: every payload is plain ASCII, so lone surrogates
or NULs inside item text cannot make a row unwritable in either backend. Encoding and
decoding are plain CPU work on small values.
"""
from __future__ import annotations

import json
from typing import Any

from .base import DuplicateItemId, IdempotencyRecord, InvalidRecord, StoreCorrupt, StoredConversation

IDEMPOTENCY_STATES = ("running", "done")


def dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{what} is not JSON-serialisable: {exc}") from None


def loads(text: Any, what: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreCorrupt(f"{what}: stored payload is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise StoreCorrupt(f"{what}: stored payload is a {type(value).__name__}, not a {kind.__name__}")
    return value


def plain_key(value: Any) -> bool:
    """Keys every backend can store and look up: non-empty str without NUL or surrogates."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_conversation(conv: StoredConversation) -> str:
    """Validate a new conversation record; returns its metadata as JSON."""
    if not plain_key(conv.id) or not isinstance(conv.tenant, str) or "\x00" in conv.tenant:
        raise InvalidRecord(f"bad conversation id or tenant: {conv.id!r}")
    if isinstance(conv.created_at, bool) or not isinstance(conv.created_at, int):
        raise InvalidRecord(f"{conv.id}: created_at must be an int (unix seconds)")
    return encode_metadata(conv.metadata, conv.id)


def encode_metadata(metadata: Any, conversation_id: str) -> str:
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidRecord(f"{conversation_id}: metadata must be an object of strings")
    return dumps(metadata, f"{conversation_id} metadata")


def encode_items(items: list[dict], conversation_id: str) -> list[tuple[str, str]]:
    """[(item_id, item JSON)] in order; ids must be storable and unique within the batch."""
    if not isinstance(items, list):
        raise InvalidRecord(f"{conversation_id}: items must be a list")
    rows, seen = [], set()
    for pos, item in enumerate(items):
        item_id = item.get("id") if isinstance(item, dict) else None
        if not plain_key(item_id):
            raise InvalidRecord(f"{conversation_id}: item {pos} needs a string 'id'")
        if item_id in seen:
            raise DuplicateItemId(item_id)
        seen.add(item_id)
        rows.append((item_id, dumps(item, f"{conversation_id} item {item_id}")))
    return rows


def decode_conversation(row: tuple) -> StoredConversation:
    """(id, tenant, created_at, metadata JSON) -> StoredConversation."""
    conversation_id, tenant, created_at, metadata = row
    return StoredConversation(id=conversation_id, tenant=tenant, created_at=created_at,
                              metadata=loads(metadata, f"{conversation_id} metadata", dict))


def decode_items(rows: list[tuple], conversation_id: str) -> list[dict]:
    """[(item_id, payload)] -> items."""
    return [loads(payload, f"{conversation_id} item {item_id}", dict) for item_id, payload in rows]


def decode_idempotency(row: tuple, key: str) -> IdempotencyRecord:
    """(state, body_hash, response JSON or None, created_at) -> IdempotencyRecord."""
    state, body_hash, response, created_at = row
    if state not in IDEMPOTENCY_STATES:
        raise StoreCorrupt(f"idempotency key {key!r}: unknown state {state!r}")
    body = loads(response, f"idempotency key {key!r} response", dict) if response is not None else None
    return IdempotencyRecord(state=state, body_hash=body_hash, response=body, created_at=created_at)
