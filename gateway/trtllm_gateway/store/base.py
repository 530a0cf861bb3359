"""The response store interface: persistence for the Responses API's stored objects.

Protocol implemented (OpenAI Responses API, see docs/responses-api.md §1-§2):

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
* ``item_reference`` input items are looked up by ``find_items()``: the tenant's stored
  input and output items by item id, many ids in one query, then its conversations' items.

Every response row carries ``schema_version``, the version of the stored payload. Readers
upgrade older versions they know and raise :class:`StoreCorrupt` for payloads they cannot
read, never returning garbage. Ids and tenants no row can hold (a NUL, a lone surrogate)
read as absent (``codec.storable``).

Conversations and idempotency keys (migration 3):

* ``/v1/conversations``: a :class:`StoredConversation` (tenant-scoped like responses) owns
  an ordered list of items; appends are atomic per call and never interleave with another
  append to the same conversation; item ids are unique within a conversation
  (:class:`DuplicateItemId` otherwise). ``list_conversation_items`` pages like
  ``list_input_items`` (``after`` only).
* ``Idempotency-Key``: ``claim_idempotency_key`` is an atomic insert-if-absent per (tenant,
  key); a ``running`` claim older than ``stale_before`` (its replica died) may be taken over.
* ``purge_conversations_older_than`` drops conversations idle since before ``ts`` and keys
  claimed before ``ts`` (the store's retention).

Jobs and event logs (migration 2; the gateway's side is ``background.py``/``events.py``):

* A *job* row per background response (``kind="background"``, created ``queued`` by
  :meth:`JobsAndEvents.enqueue_job`) and per stored streaming response (``kind="stream"``,
  created ``running`` by its own replica with :meth:`JobsAndEvents.open_stream`). A
  replica claims with :meth:`JobsAndEvents.claim_jobs` the queued jobs and the running
  ones whose lease expired; every claim raises ``attempt`` by one, and every write of a
  job's state goes through :meth:`JobsAndEvents.write_job`, fenced by
  :class:`JobOwner` (replica, attempt): a replica that lost its lease writes nothing.
  Leases are renewed, and cancel requests seen, by :meth:`JobsAndEvents.watch_jobs`.
* The *event log*: a response's SSE events, ``sequence_number`` 0..n-1, appended by the
  job's owner and read by :meth:`JobsAndEvents.read_events` in the same snapshot as the
  response status and whether the log can still grow.

The interface is split by concern (:class:`ResponseRecords`, :class:`JobsAndEvents`,
:class:`ConversationRecords`, :class:`IdempotencyKeys`); :class:`ResponseStore` is all four
plus the lifecycle, and is what the gateway holds. Backends are chosen by URL scheme in
``store/__init__.py``; both are ``store/sql.py`` over SQLAlchemy Core.

Times are unix milliseconds (``now_ms``, default: this host's clock) for jobs, unix
seconds elsewhere; replicas need clocks in sync to well under the lease.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence

from .records import (
    Appended,
    CancelResult,
    EventPage,
    IdempotencyRecord,
    ItemPage,
    Job,
    JobOwner,
    JobWatch,
    LoggedEvent,
    StoredConversation,
    StoredResponse,
)


class ResponseRecords(abc.ABC):
    """Stored responses and their items."""

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
        """Remove the response, its items, job and event log; False if there was nothing."""

    @abc.abstractmethod
    async def list_input_items(self, response_id: str, tenant: str, *, after: str | None = None,
                               before: str | None = None, limit: int = 20,
                               order: str = "desc") -> ItemPage | None:
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
    async def find_items(self, item_ids: Sequence[str], tenant: str) -> dict[str, dict]:
        """Stored items by id (what an ``item_reference`` names): id -> item for every id an
        input or output item of one of ``tenant``'s responses, or an item of one of its
        conversations, carries. Ids found nowhere, or only in another tenant's responses and
        conversations, are absent from the result. Where several rows carry one id (a client
        may reuse an id in a later turn's input), a response's output item wins over its
        input item, then the oldest response, then a conversation's item (the oldest
        conversation first)."""

    @abc.abstractmethod
    async def purge_older_than(self, ts: int) -> int:
        """Delete responses with created_at < ts (retention TTL), with their jobs and event
        logs; returns how many."""


class JobsAndEvents(abc.ABC):
    """Background and stream jobs, fenced by (replica, attempt), and their event logs."""

    @abc.abstractmethod
    async def enqueue_job(self, record: StoredResponse, spec: dict, events: list[LoggedEvent],
                          *, now_ms: int | None = None) -> None:
        """Atomically: insert ``record`` (status queued; StoreError if the id exists), a
        queued background job running ``spec`` (JSON-able), and the log's first events."""

    @abc.abstractmethod
    async def open_stream(self, record: StoredResponse, replica: str, lease_ms: int,
                          events: list[LoggedEvent], *, now_ms: int | None = None,
                          spec: dict | None = None) -> JobOwner:
        """A stored streaming response's first write: insert ``record`` unless its id exists
        (a final save may have landed first), a running ``stream`` job claimed by
        ``replica`` (attempt 1), whose ``spec`` is what ending it needs (``{}`` by default),
        and the first events. Returns the owner for write_job."""

    @abc.abstractmethod
    async def claim_jobs(self, replica: str, limit: int, lease_ms: int,
                         *, now_ms: int | None = None) -> list[Job]:
        """Claim up to ``limit`` jobs, oldest first: queued ones, and running ones whose
        lease has expired. Each gets ``attempt + 1``, ``replica`` as owner and a lease to
        ``now + lease_ms``. Replicas claiming at once never get the same job."""

    @abc.abstractmethod
    async def watch_jobs(self, replica: str, attempts: dict[str, int], lease_ms: int | None,
                         *, now_ms: int | None = None) -> JobWatch:
        """For the jobs ``replica`` runs (response id -> attempt): which it no longer owns
        and which have a cancel request. With ``lease_ms``, renews the owned ones' leases."""

    @abc.abstractmethod
    async def write_job(self, owner: JobOwner, response_id: str, *,
                        events: Sequence[LoggedEvent] = (), record: StoredResponse | None = None,
                        done: bool = False) -> bool:
        """Atomically, only while ``owner`` holds the running job: append ``events``, save
        ``record`` (as ``save``) and, with ``done``, finish the job (its log is complete).
        False, with nothing written, when the owner lost the job."""

    @abc.abstractmethod
    async def append_events(self, logs: Sequence[tuple[JobOwner, str, Sequence[LoggedEvent]]]) -> Appended:
        """(owner, response id, events) of several jobs in one transaction, each fenced as
        by ``write_job``: a job lost to its owner, or whose events are refused, gets none."""

    @abc.abstractmethod
    async def request_cancel(self, response_id: str, tenant: str, replica: str, lease_ms: int,
                             *, now_ms: int | None = None) -> CancelResult:
        """Flag a background job for cancellation. If nobody runs it (queued, or its lease
        expired) the job is also claimed for ``replica`` ("claimed"), which must finish it;
        otherwise its owner sees the flag through watch_jobs ("requested")."""

    @abc.abstractmethod
    async def read_events(self, response_id: str, tenant: str, after: int,
                          limit: int) -> EventPage | None:
        """Up to ``limit`` logged events with sequence_number > ``after``, in order; None if
        the response is absent or another tenant's."""


class ConversationRecords(abc.ABC):
    """Conversations and their ordered items."""

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
    async def purge_conversations_older_than(self, ts: int) -> int:
        """Delete conversations not updated since ``ts`` and idempotency keys claimed before
        ``ts``; returns how many rows of both."""


class IdempotencyKeys(abc.ABC):
    """Idempotency-Key claims and the responses they recorded."""

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


class ResponseStore(ResponseRecords, JobsAndEvents, ConversationRecords, IdempotencyKeys):
    """The whole store the gateway uses: all four concerns. All methods are coroutines."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema and run pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    async def __aenter__(self) -> ResponseStore:
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
