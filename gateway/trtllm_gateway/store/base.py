"""The response store interface: persistence for the Responses API's stored objects.

Protocol implemented (OpenAI Responses API, see REFERENCE.md §1-§2):

* ``GET /v1/responses/{id}`` reads a :class:`StoredResponse` by id, scoped to a tenant
  (the API-key owner; ``""`` when auth is off). Another tenant's response is
  indistinguishable from an absent one.
* ``DELETE /v1/responses/{id}`` removes it; later responses that named it as
  ``previous_response_id`` keep their own rows but can no longer be continued
  (``history()`` returns None -> the caller answers 404 ``previous_response_not_found``).
* ``GET /v1/responses/{id}/input_items`` pages this turn's input items: ``order`` asc|desc
  (default desc), ``limit`` 1..100 (default 20), ``after``/``before`` are item ids and are
  exclusive cursors that move in the direction of ``order``. The page carries
  ``first_id``/``last_id``/``has_more``.
* ``previous_response_id`` continuation reads ``history()``: for every response in the
  chain, oldest first, its input items then its output items.

Every row carries ``schema_version``, the version of the stored payload. Readers upgrade
older versions they know and raise :class:`StoreCorrupt` for payloads they cannot read,
never returning garbage. Backends are chosen by URL scheme in ``store/__init__.py``.

Conversations and idempotency keys (their own migration; rows in ``store/conv_codec.py``):

* ``/v1/conversations``: a :class:`StoredConversation` (tenant-scoped like responses) owns
  an ordered list of items; appends are atomic per call and never interleave with another
  append to the same conversation; item ids are unique within a conversation
  (:class:`DuplicateItemId` otherwise). ``list_conversation_items`` pages like
  ``list_input_items`` (``after`` only).
* ``Idempotency-Key``: ``claim_idempotency_key`` is an atomic insert-if-absent per (tenant,
  key); a ``running`` claim older than ``stale_before`` (its replica died) may be taken over.
* ``purge_conversations_older_than`` drops conversations idle since before ``ts`` and keys
  claimed before ``ts`` (the store's retention).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

SCHEMA_VERSION = 1  # version of the stored payload; rows carry it, readers upgrade/reject older ones

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


class StoreError(Exception):
    """Base class of the store's own errors."""


class NotFound(StoreError):
    """Optional helper for callers that prefer an exception over a None."""


class StoreCorrupt(StoreError):
    """A stored row cannot be read: unparseable payload or unknown schema_version."""


class HistoryTooDeep(StoreError):
    """The previous_response_id chain is longer than MAX_HISTORY_DEPTH (or loops)."""


class InvalidPageRequest(StoreError, ValueError):
    """Bad list_input_items arguments (limit out of 1..100, unknown order).

    ``param`` names the offending query parameter, for a 400 ``invalid_request_error``.
    """

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class InvalidRecord(StoreError, ValueError):
    """save() was given a record that cannot be stored (a caller bug, not bad user input)."""


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


class DuplicateItemId(StoreError, ValueError):
    """An item id that is already in the conversation (or twice in one append)."""

    def __init__(self, item_id: str):
        super().__init__(f"item id {item_id!r} is already in the conversation")
        self.item_id = item_id


class ResponseStore(abc.ABC):
    """A tenant-scoped store of responses and their items. All methods are coroutines."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema and run pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    @abc.abstractmethod
    async def save(self, record: StoredResponse) -> None:
        """Insert, or replace the same id's state (items included).

        Streamed responses are saved at the end; background ones are updated as they
        progress. Raises InvalidRecord for a malformed record, and StoreError when the
        id already belongs to another tenant. The write is atomic: if the caller is
        cancelled, it still either completes or leaves the previous state.
        """

    @abc.abstractmethod
    async def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        """The response, or None if absent, deleted, or another tenant's."""

    @abc.abstractmethod
    async def delete(self, response_id: str, tenant: str) -> bool:
        """Remove the response and its items; False if there was nothing to delete."""

    @abc.abstractmethod
    async def list_input_items(
        self,
        response_id: str,
        tenant: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        """A page of this turn's input items, or None if the response is not found.

        Semantics of OpenAI's GET /v1/responses/{id}/input_items: order asc|desc, limit
        1..100 (else InvalidPageRequest), after/before are item ids, cursors exclusive
        and read in the direction of ``order``. An unknown cursor id gives an empty page.
        """

    @abc.abstractmethod
    async def history(self, response_id: str, tenant: str) -> list[dict] | None:
        """The conversation that ``previous_response_id=response_id`` continues.

        For each response in the chain, oldest first: its input items, then its output
        items (response["output"]). None if the response or any ancestor is missing,
        deleted, or another tenant's. Raises HistoryTooDeep past MAX_HISTORY_DEPTH.
        """

    @abc.abstractmethod
    async def purge_older_than(self, ts: int) -> int:
        """Delete responses with created_at < ts (retention TTL); returns how many."""

    # -- conversations and idempotency keys -----------------------------------------------
    @abc.abstractmethod
    async def create_conversation(self, conversation: StoredConversation, items: list[dict]) -> None:
        """Insert a conversation with its first items, atomically (StoreError if the id exists)."""

    @abc.abstractmethod
    async def get_conversation(self, conversation_id: str, tenant: str) -> StoredConversation | None:
        """The conversation, or None if absent, deleted or another tenant's."""

    @abc.abstractmethod
    async def update_conversation(self, conversation_id: str, tenant: str, metadata: dict,
                                  now: int) -> StoredConversation | None:
        """Replace its metadata; None if absent."""

    @abc.abstractmethod
    async def delete_conversation(self, conversation_id: str, tenant: str) -> bool:
        """Remove the conversation and its items; False if there was nothing to delete."""

    @abc.abstractmethod
    async def append_conversation_items(self, conversation_id: str, tenant: str, items: list[dict],
                                        now: int) -> bool:
        """Append items (each with a unique "id") after the existing ones, atomically;
        False if the conversation is absent. Raises DuplicateItemId."""

    @abc.abstractmethod
    async def list_conversation_items(self, conversation_id: str, tenant: str, *, after: str | None = None,
                                      limit: int = 20, order: str = "desc") -> ItemPage | None:
        """A page of items (semantics of list_input_items without ``before``); None if absent."""

    @abc.abstractmethod
    async def conversation_items(self, conversation_id: str, tenant: str) -> list[dict] | None:
        """Every item, oldest first (the history of a create); None if absent."""

    @abc.abstractmethod
    async def get_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> dict | None:
        """One item; None if it or its conversation is absent."""

    @abc.abstractmethod
    async def delete_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> bool | None:
        """Remove one item: True; False if the item is absent; None if the conversation is."""

    @abc.abstractmethod
    async def claim_idempotency_key(self, tenant: str, key: str, body_hash: str, now: int,
                                    stale_before: int) -> IdempotencyRecord | None:
        """None when this caller now holds the key (new, or a ``running`` claim made before
        ``stale_before`` taken over); otherwise the existing record, unchanged."""

    @abc.abstractmethod
    async def finish_idempotency_key(self, tenant: str, key: str, response: dict) -> None:
        """Record the finished response of a claimed key (state ``done``)."""

    @abc.abstractmethod
    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        """Forget a ``running`` claim (nothing was produced; a retry runs again)."""

    @abc.abstractmethod
    async def purge_conversations_older_than(self, ts: int) -> int:
        """Delete conversations not updated since ``ts`` and idempotency keys claimed before
        ``ts``; returns how many rows of both."""

    async def __aenter__(self) -> "ResponseStore":
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def check_page_args(limit: int, order: str) -> None:
    """Shared validation of list_input_items arguments, so every backend agrees."""
    if order not in ORDERS:
        raise InvalidPageRequest(f"order must be one of {', '.join(ORDERS)}, got {order!r}", "order")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidPageRequest(
            f"limit must be an integer in 1..{MAX_PAGE_LIMIT}, got {limit!r}", "limit"
        )
