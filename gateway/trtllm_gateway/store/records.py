"""The store's value types, limits and errors: what ``base.py``'s interface reads and
returns, shared by every backend and by the gateway (the protocol is ``base.py``'s)."""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1  # version of the stored payload; rows carry it, readers upgrade/reject older ones
FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})

MAX_HISTORY_DEPTH = 1000  # longest previous_response_id chain history() will walk
MAX_PAGE_LIMIT = 100
ORDERS = ("asc", "desc")


@dataclass
class StoredResponse:
    id: str                      # "resp_..."
    tenant: str                  # API-key owner id ("" when auth is off); isolates reads/deletes
    created_at: int
    status: str                  # queued|in_progress|completed|incomplete|failed|cancelled
    response: dict               # the full Responses API response object (JSON-able)
    input_items: list[dict]      # this turn's input items, each with an "id", in order
    previous_response_id: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class ItemPage:
    data: list[dict]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: list[dict], has_more: bool) -> ItemPage:
        return cls(data, data[0]["id"] if data else None, data[-1]["id"] if data else None, has_more)


@dataclass(frozen=True)
class JobOwner:
    """Who may write a job's state: the replica that claimed it, at that claim's attempt."""

    replica: str
    attempt: int


@dataclass
class Job:
    """A claimed job (``claim_jobs``, ``request_cancel``)."""

    response_id: str
    tenant: str
    kind: str                # "background" | "stream"
    attempt: int             # 1 at the first claim; each re-claim adds one
    spec: dict               # what to run (set by enqueue_job); for streams, what ending one needs
    cancel_requested: bool


@dataclass(frozen=True)
class LoggedEvent:
    sequence_number: int
    type: str
    payload: str             # the event as JSON, its sequence_number included


@dataclass
class EventPage:
    """Events after a cursor, read in one snapshot with the response's state."""

    status: str              # the response's status
    last: int                # highest sequence_number logged; -1 when there is no log
    open: bool               # the log may still grow (its job is not done)
    events: list[LoggedEvent]


@dataclass
class Appended:  # what JobsAndEvents.append_events did not write, by response id
    lost: set[str]           # no longer the writer's job (as write_job's False)
    refused: set[str]        # events no row can hold (InvalidRecord for write_job)


@dataclass
class JobWatch:
    lost: set[str]           # no longer this owner's (re-claimed, deleted, done): stop, write nothing
    cancel: set[str]         # still owned, and a cancel was requested


@dataclass
class CancelResult:
    state: str               # "absent" (no background job) | "done" | "requested" | "claimed"
    job: Job | None = None   # with "claimed": the job, now the canceller's to finish


@dataclass
class StoredConversation:
    id: str                      # "conv_..."
    tenant: str
    created_at: int
    metadata: dict               # <= 16 string pairs (validated by the gateway)


@dataclass
class IdempotencyRecord:
    state: str                   # "running" (claimed, not finished) | "done"
    body_hash: str               # hash of the canonical request body
    response: dict | None        # the finished response object ("done")
    created_at: int              # when the key was claimed (unix seconds)


class StoreError(Exception):
    """Base class of the store's own errors (driver errors are raised as this too)."""


class StoreCorrupt(StoreError):
    """A stored row cannot be read: unparseable payload or unknown schema_version."""


class HistoryTooDeep(StoreError):
    """The previous_response_id chain is longer than MAX_HISTORY_DEPTH (or loops)."""


class InvalidPageRequest(StoreError, ValueError):
    """Bad list arguments (limit out of 1..100, unknown order).

    ``param`` names the offending query parameter, for a 400 ``invalid_request_error``.
    """

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class InvalidRecord(StoreError, ValueError):
    """A record that cannot be stored (a caller bug, not bad user input)."""


class DuplicateItemId(StoreError, ValueError):
    """An item id that is already in the conversation (or twice in one append)."""

    def __init__(self, item_id: str):
        super().__init__(f"item id {item_id!r} is already in the conversation")
        self.item_id = item_id


def check_page_args(limit: int, order: str) -> None:
    """Shared validation of list arguments, so every list agrees."""
    if order not in ORDERS:
        raise InvalidPageRequest(f"order must be one of {', '.join(ORDERS)}, got {order!r}", "order")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidPageRequest(
            f"limit must be an integer in 1..{MAX_PAGE_LIMIT}, got {limit!r}", "limit"
        )
