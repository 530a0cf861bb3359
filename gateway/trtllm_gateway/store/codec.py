"""Backend-neutral encoding of stored responses (payload schema version 1).

A :class:`~.base.StoredResponse` is stored as three kinds of rows, in every backend:

* the response row: the response object as JSON with ``output`` emptied (the key is kept
  as ``[]`` so its position in the object survives a round trip);
* one row per input item, ``kind = "input"``, keyed by position, carrying the item id;
* one row per output item, ``kind = "output"`` (the entries of ``response["output"]``).

Keeping items as rows is what lets ``input_items`` pagination and ``history()`` read only
what they need. Every response row carries ``schema_version``; :data:`UPGRADERS` turns an
older version into the next one on read, and anything else raises StoreCorrupt.
Encoding and decoding are plain CPU work: backends run them off the event loop.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from .base import SCHEMA_VERSION, InvalidRecord, StoreCorrupt, StoredResponse

STATUSES = frozenset({"queued", "in_progress", "completed", "incomplete", "failed", "cancelled"})
KIND_INPUT = "input"
KIND_OUTPUT = "output"

# version v -> function(response, input_items, output_items) returning the v+1 triple.
# Empty while v1 is the only version; a v2 adds UPGRADERS[1].
Upgrader = Callable[[dict, list, list], tuple[dict, list, list]]
UPGRADERS: dict[int, Upgrader] = {}


@dataclass
class EncodedRecord:
    payload: str                                   # response JSON, output emptied
    inputs: list[tuple[int, str, str]]             # (position, item_id, item JSON)
    outputs: list[tuple[int, str | None, str]]     # (position, item_id or None, item JSON)


def _dumps(value: Any, what: str) -> str:
    try:
        # allow_nan=False: NaN/Infinity are not JSON and would be unreadable by clients.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{what} is not JSON-serialisable: {exc}") from None


def _check_header(record: StoredResponse) -> None:
    if not isinstance(record.id, str) or not record.id:
        raise InvalidRecord(f"response id must be a non-empty string, got {record.id!r}")
    if not isinstance(record.tenant, str):
        raise InvalidRecord(f"{record.id}: tenant must be a string")
    if isinstance(record.created_at, bool) or not isinstance(record.created_at, int):
        raise InvalidRecord(f"{record.id}: created_at must be an int (unix seconds)")
    if record.status not in STATUSES:
        raise InvalidRecord(f"{record.id}: unknown status {record.status!r}")
    if record.schema_version != SCHEMA_VERSION:
        raise InvalidRecord(f"{record.id}: only schema_version {SCHEMA_VERSION} can be written")
    prev = record.previous_response_id
    if prev is not None and (not isinstance(prev, str) or not prev or prev == record.id):
        raise InvalidRecord(f"{record.id}: bad previous_response_id {prev!r}")
    if not isinstance(record.response, dict):
        raise InvalidRecord(f"{record.id}: response must be a dict")
    for key in ("id", "status"):  # the indexed columns must agree with the object served
        if key in record.response and record.response[key] != getattr(record, key):
            raise InvalidRecord(f"{record.id}: response[{key!r}] disagrees with the record")


def _input_rows(record: StoredResponse) -> list[tuple[int, str, str]]:
    if not isinstance(record.input_items, list):
        raise InvalidRecord(f"{record.id}: input_items must be a list")
    rows, seen = [], set()
    for pos, item in enumerate(record.input_items):
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or not item_id:
            raise InvalidRecord(f"{record.id}: input item {pos} needs a string 'id'")
        if item_id in seen:  # ids are pagination cursors: they must be unique per turn
            raise InvalidRecord(f"{record.id}: duplicate input item id {item_id!r}")
        seen.add(item_id)
        rows.append((pos, item_id, _dumps(item, f"{record.id} input item {item_id}")))
    return rows


def encodable(*texts: Any) -> bool:
    """False when a text has no UTF-8 form (a lone surrogate, e.g. from a JSON "\\ud800" escape):
    no backend can store or even look it up."""
    try:
        for text in texts:
            text.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        return False
    return True


def encode_record(record: StoredResponse) -> EncodedRecord:
    """Validate ``record`` and turn it into rows. Raises InvalidRecord."""
    enc = _encode_rows(record)
    keys = [record.id, record.tenant, record.previous_response_id or ""]
    rows = enc.inputs + enc.outputs
    if not encodable(enc.payload, *keys, *(item_id or "" for _, item_id, _ in rows), *(p for *_, p in rows)):
        raise InvalidRecord(f"{record.id!r}: text is not valid Unicode (lone surrogate)")
    return enc


def _encode_rows(record: StoredResponse) -> EncodedRecord:
    _check_header(record)
    output = record.response.get("output", [])
    if not isinstance(output, list) or not all(isinstance(i, dict) for i in output):
        raise InvalidRecord(f"{record.id}: response['output'] must be a list of objects")
    outputs = []
    for pos, item in enumerate(output):
        item_id = item.get("id") if isinstance(item.get("id"), str) else None
        outputs.append((pos, item_id, _dumps(item, f"{record.id} output item {pos}")))
    shell = dict(record.response)
    if "output" in shell:
        shell["output"] = []
    return EncodedRecord(_dumps(shell, f"{record.id} response"), _input_rows(record), outputs)


def _loads(text: Any, what: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreCorrupt(f"{what}: stored payload is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise StoreCorrupt(f"{what}: stored payload is a {type(value).__name__}, not a {kind.__name__}")
    return value


def check_version(version: Any, response_id: str) -> None:
    """Raise StoreCorrupt unless ``version`` is current or can be upgraded to it."""
    known = isinstance(version, int) and not isinstance(version, bool)
    if known and version == SCHEMA_VERSION:
        return
    if known and 1 <= version < SCHEMA_VERSION and all(
        v in UPGRADERS for v in range(version, SCHEMA_VERSION)
    ):
        return
    raise StoreCorrupt(
        f"{response_id}: stored schema_version {version!r} is not readable by this gateway "
        f"(it reads 1..{SCHEMA_VERSION})"
    )


def decode_items(rows: list[tuple[str, Any]], response_id: str) -> list[dict]:
    """``rows`` = [(item_id_or_label, payload_text)] in position order."""
    return [_loads(text, f"{response_id} item {label}", dict) for label, text in rows]


def upgrade(version: int, response: dict, inputs: list, outputs: list, response_id: str):
    """Bring a decoded payload from ``version`` up to SCHEMA_VERSION."""
    check_version(version, response_id)
    while version < SCHEMA_VERSION:
        response, inputs, outputs = UPGRADERS[version](response, inputs, outputs)
        version += 1
    return response, inputs, outputs


@dataclass
class ResponseRow:
    """A response row as a backend read it, before decoding."""

    id: str
    tenant: str
    created_at: int
    status: str
    previous_response_id: str | None
    schema_version: Any
    payload: Any


def decode_record(row: ResponseRow, inputs: list, outputs: list) -> StoredResponse:
    """Rows -> StoredResponse at the current version, ``output`` refilled. Raises StoreCorrupt."""
    check_version(row.schema_version, row.id)
    response = _loads(row.payload, f"{row.id} response", dict)
    input_items = decode_items(inputs, row.id)
    output_items = decode_items(outputs, row.id)
    response, input_items, output_items = upgrade(
        row.schema_version, response, input_items, output_items, row.id
    )
    if "output" in response or output_items:
        response["output"] = output_items
    return StoredResponse(
        id=row.id,
        tenant=row.tenant,
        created_at=row.created_at,
        status=row.status,
        response=response,
        input_items=input_items,
        previous_response_id=row.previous_response_id,
        schema_version=SCHEMA_VERSION,
    )


def decode_chain(rows: list[ResponseRow], items: list) -> list[StoredResponse]:
    """Decode response rows (in the given order) with their item rows
    ``(response_id, kind, item_id, position, payload)``. Runs in a thread."""
    grouped: dict[tuple[str, str], list] = {}
    for response_id, kind, item_id, position, payload in items:
        label = item_id if item_id is not None else f"{kind}[{position}]"
        grouped.setdefault((response_id, kind), []).append((label, payload))
    return [
        decode_record(row, grouped.get((row.id, KIND_INPUT), []), grouped.get((row.id, KIND_OUTPUT), []))
        for row in rows
    ]
