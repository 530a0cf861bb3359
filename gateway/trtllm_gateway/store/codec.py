"""How the store's records become rows and back: one key policy, one JSON policy.

Keys (ids, tenants, idempotency keys): :func:`storable` is the one check. A key must be a
str with a UTF-8 form (no lone surrogate, such as a JSON "\\ud800" escape) and without NUL
(PostgreSQL text cannot hold one). Writes refuse other keys (InvalidRecord); look-ups answer
"absent" for them without asking the database, since no row can have them.

JSON (:func:`dumps`/:func:`loads`): compact, no NaN/Infinity (not JSON; clients could not
read them), UTF-8 text. A value whose text has no UTF-8 form (a lone surrogate inside a
conversation item) is written with ASCII escapes instead, so every JSON value is storable;
a response record, which is served to clients as is, must be valid Unicode (InvalidRecord).
Payloads are kept as TEXT, not ``jsonb``, so key order survives. Unreadable payloads raise
StoreCorrupt on read.

Rows (tables in ``schema.py``): a :class:`~.base.StoredResponse` is a ``responses`` row (the
object with ``output`` emptied; the key is kept as ``[]`` so its position survives a round
trip) plus one ``items`` row per input item (``kind="input"``, with its id) and per output
item (``kind="output"``), keyed by position: lists and ``history()`` read only what they
need. Every response row carries ``schema_version``; :data:`UPGRADERS` turns an older
version into the next on read, anything else raises StoreCorrupt. Conversations keep their
metadata as JSON and one row per item; idempotency keys keep the finished response.
Encoding and decoding are plain CPU work: the store runs large ones off the event loop.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .records import (
    SCHEMA_VERSION,
    DuplicateItemId,
    IdempotencyRecord,
    InvalidRecord,
    Job,
    LoggedEvent,
    StoreCorrupt,
    StoredConversation,
    StoredResponse,
    StoreError,
)

STATUSES = frozenset({"queued", "in_progress", "completed", "incomplete", "failed", "cancelled"})
IDEMPOTENCY_STATES = ("running", "done")
KIND_INPUT, KIND_OUTPUT = "input", "output"
INT64 = range(-(2**63), 2**63)  # what an integer column holds

# version v -> function(response, input_items, output_items) returning the v+1 triple.
# Empty while v1 is the only version; a v2 adds UPGRADERS[1]. find_items upgrades one item
# at a time: it passes an empty response and the item alone in its list.
Upgrader = Callable[[dict, list, list], tuple[dict, list, list]]
UPGRADERS: dict[int, Upgrader] = {}


def storable(*keys: Any) -> bool:
    """True when every key can be stored and looked up in every backend ("" included)."""
    for key in keys:
        if not isinstance(key, str) or "\x00" in key:
            return False
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def plain_key(value: Any) -> bool:
    """A storable, non-empty id (conversation items; also checked by the gateway)."""
    return isinstance(value, str) and value != "" and storable(value)


def check_int(value: Any, what: str, error: type[StoreError] = StoreError) -> int:
    """``value`` if an integer column can hold it; ``error`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in INT64:
        raise error(f"{what} must be a 64-bit integer, got {value!r}")
    return value


def dumps(value: Any, what: str, *, unicode_only: bool = False) -> str:
    """The stored JSON text of ``value`` (see the module docstring). Raises InvalidRecord."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{what} is not JSON-serialisable: {exc}") from None
    if storable(text):  # json escapes NUL itself
        return text
    if unicode_only:
        raise InvalidRecord(f"{what}: text is not valid Unicode (lone surrogate)")
    return json.dumps(value, separators=(",", ":"))  # ASCII escapes: always storable


def loads(text: Any, what: str, kind: type = dict) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreCorrupt(f"{what}: stored payload is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise StoreCorrupt(f"{what}: stored payload is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _key(value: Any, what: str) -> str:
    if not plain_key(value):
        raise InvalidRecord(f"{what} must be a non-empty string without NUL or lone surrogates, got {value!r}")
    return value


# -- responses -------------------------------------------------------------------------
@dataclass
class EncodedRecord:
    row: dict          # the responses row
    items: list[dict]  # the items rows, inputs then outputs


def _check_header(record: StoredResponse) -> None:
    _key(record.id, "response id")
    if not storable(record.tenant):
        raise InvalidRecord(f"{record.id}: tenant must be a string without NUL or lone surrogates")
    check_int(record.created_at, f"{record.id}: created_at", InvalidRecord)
    if record.status not in STATUSES:
        raise InvalidRecord(f"{record.id}: unknown status {record.status!r}")
    if record.schema_version != SCHEMA_VERSION:
        raise InvalidRecord(f"{record.id}: only schema_version {SCHEMA_VERSION} can be written")
    if record.previous_response_id is not None:
        _key(record.previous_response_id, f"{record.id}: previous_response_id")
        if record.previous_response_id == record.id:
            raise InvalidRecord(f"{record.id}: previous_response_id is the response itself")
    if not isinstance(record.response, dict):
        raise InvalidRecord(f"{record.id}: response must be a dict")
    for key in ("id", "status"):  # the indexed columns must agree with the object served
        if key in record.response and record.response[key] != getattr(record, key):
            raise InvalidRecord(f"{record.id}: response[{key!r}] disagrees with the record")


def encode_record(record: StoredResponse) -> EncodedRecord:
    """Validate ``record`` and turn it into rows. Raises InvalidRecord."""
    _check_header(record)
    if not isinstance(record.input_items, list):
        raise InvalidRecord(f"{record.id}: input_items must be a list")
    output = record.response.get("output", [])
    if not isinstance(output, list) or not all(isinstance(i, dict) for i in output):
        raise InvalidRecord(f"{record.id}: response['output'] must be a list of objects")
    items, seen = [], set()
    for pos, item in enumerate(record.input_items):
        item_id = _key(item.get("id") if isinstance(item, dict) else None, f"{record.id}: input item {pos} id")
        if item_id in seen:  # ids are pagination cursors: they must be unique per turn
            raise InvalidRecord(f"{record.id}: duplicate input item id {item_id!r}")
        seen.add(item_id)
        items.append(_item_row(record.id, KIND_INPUT, pos, item_id, item))
    for pos, item in enumerate(output):
        label = item.get("id") if isinstance(item.get("id"), str) else None  # not a cursor
        if label is not None and not storable(label):
            raise InvalidRecord(f"{record.id}: output item {pos} has an id no row can hold")
        items.append(_item_row(record.id, KIND_OUTPUT, pos, label, item))
    shell = dict(record.response)
    if "output" in shell:
        shell["output"] = []
    row = dict(id=record.id, tenant=record.tenant, created_at=record.created_at, status=record.status,
               previous_response_id=record.previous_response_id, schema_version=record.schema_version,
               payload=dumps(shell, f"{record.id} response", unicode_only=True))
    return EncodedRecord(row, items)


def _item_row(response_id: str, kind: str, position: int, item_id: str | None, item: dict) -> dict:
    return dict(response_id=response_id, kind=kind, position=position, item_id=item_id,
                payload=dumps(item, f"{response_id} {kind} item {position}", unicode_only=True))


def check_version(version: Any, response_id: str) -> None:
    """Raise StoreCorrupt unless ``version`` is current or can be upgraded to it."""
    known = isinstance(version, int) and not isinstance(version, bool)
    if known and 1 <= version <= SCHEMA_VERSION and all(
            v in UPGRADERS for v in range(version, SCHEMA_VERSION)):
        return
    raise StoreCorrupt(
        f"{response_id}: stored schema_version {version!r} is not readable by this gateway "
        f"(it reads 1..{SCHEMA_VERSION})"
    )


def decode_record(row: Any, inputs: list, outputs: list) -> StoredResponse:
    """A ``responses`` row and its items' (label, payload) -> StoredResponse at the current
    version, ``output`` refilled. Raises StoreCorrupt."""
    check_version(row.schema_version, row.id)
    response = loads(row.payload, f"{row.id} response")
    input_items = decode_items(inputs, row.id)
    output_items = decode_items(outputs, row.id)
    for version in range(row.schema_version, SCHEMA_VERSION):
        response, input_items, output_items = UPGRADERS[version](response, input_items, output_items)
    if "output" in response or output_items:
        response["output"] = output_items
    return StoredResponse(id=row.id, tenant=row.tenant, created_at=row.created_at, status=row.status,
                          response=response, input_items=input_items,
                          previous_response_id=row.previous_response_id)


def decode_chain(rows: Sequence[Any], items: Iterable[Any]) -> list[StoredResponse]:
    """Decode ``responses`` rows (in the given order) with their ``items`` rows."""
    grouped: dict[tuple[str, str], list] = {}
    for item in items:
        label = item.item_id if item.item_id is not None else f"{item.kind}[{item.position}]"
        grouped.setdefault((item.response_id, item.kind), []).append((label, item.payload))
    return [decode_record(row, grouped.get((row.id, KIND_INPUT), []), grouped.get((row.id, KIND_OUTPUT), []))
            for row in rows]


def decode_found(rows: Iterable[Any], conversation_rows: Iterable[Any] = ()) -> dict[str, dict]:
    """``find_items`` rows (item_id, response_id, kind, payload, schema_version), in
    preference order, then its conversation rows (item_id, payload, conversation_id), in
    preference order -> item id -> its first row's item, at the current version."""
    found: dict[str, dict] = {}
    for row in rows:
        if row.item_id in found:
            continue
        check_version(row.schema_version, row.response_id)
        item = loads(row.payload, f"{row.response_id} item {row.item_id}")
        for version in range(row.schema_version, SCHEMA_VERSION):
            alone = [item]
            _, inputs, outputs = UPGRADERS[version]({}, alone if row.kind == KIND_INPUT else [],
                                                    alone if row.kind == KIND_OUTPUT else [])
            item = (inputs or outputs)[0]
        found[row.item_id] = item
    for row in conversation_rows:  # stored as the conversation API lists them: no versions
        found.setdefault(row.item_id, loads(row.payload, f"{row.conversation_id} item {row.item_id}"))
    return found


def decode_items(rows: Iterable[tuple[Any, Any]], owner: str) -> list[dict]:
    """[(item id or label, payload)] in order -> items."""
    return [loads(payload, f"{owner} item {label}") for label, payload in rows]


# -- jobs and events -------------------------------------------------------------------
def event_rows(response_id: str, events: Iterable[LoggedEvent]) -> list[dict]:
    rows = [dict(response_id=response_id, sequence_number=e.sequence_number, type=e.type, payload=e.payload)
            for e in events]
    if not storable(*(r["type"] for r in rows), *(r["payload"] for r in rows)):
        raise InvalidRecord(f"{response_id}: event payloads may not contain NUL characters or lone surrogates")
    return rows


def decode_job(row: Any) -> Job:
    return Job(row.response_id, row.tenant, row.kind, row.attempts,
               loads(row.spec, f"{row.response_id} job spec"), bool(row.cancel_requested))


# -- conversations and idempotency keys ------------------------------------------------
def check_conversation(conv: StoredConversation) -> str:
    """Validate a new conversation record; returns its metadata as JSON."""
    _key(conv.id, "conversation id")
    if not storable(conv.tenant):
        raise InvalidRecord(f"{conv.id}: tenant must be a string without NUL or lone surrogates")
    check_int(conv.created_at, f"{conv.id}: created_at", InvalidRecord)
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
        item_id = _key(item.get("id") if isinstance(item, dict) else None, f"{conversation_id}: item {pos} id")
        if item_id in seen:
            raise DuplicateItemId(item_id)
        seen.add(item_id)
        rows.append((item_id, dumps(item, f"{conversation_id} item {item_id}")))
    return rows


def decode_conversation(row: Any) -> StoredConversation:
    return StoredConversation(id=row.id, tenant=row.tenant, created_at=row.created_at,
                              metadata=loads(row.metadata, f"{row.id} metadata"))


def decode_idempotency(row: Any, key: str) -> IdempotencyRecord:
    if row.state not in IDEMPOTENCY_STATES:
        raise StoreCorrupt(f"idempotency key {key!r}: unknown state {row.state!r}")
    body = None if row.response is None else loads(row.response, f"idempotency key {key!r} response")
    return IdempotencyRecord(state=row.state, body_hash=row.body_hash, response=body, created_at=row.created_at)
