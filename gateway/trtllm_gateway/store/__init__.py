"""Response store: backend selection by URL.

``open_store(url)`` picks a backend from the URL scheme via ``BACKENDS``:

* ``sqlite:///relative/or/absolute.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:``,
  or a plain filesystem path -> :class:`~trtllm_gateway.store.sqlite.SQLiteStore` (pysqlite, a thread per transaction).
* ``postgresql://...`` / ``postgres://...`` (libpq DSN, as asyncpg reads it) ->
  :class:`~trtllm_gateway.store.postgres.PostgresStore` (asyncpg).

Both are :class:`~trtllm_gateway.store.sql.SQLStore`: one SQLAlchemy Core implementation of
the interface in ``base.py``, with the tables in ``schema.py`` and the row encoding in
``codec.py``; each backend module holds only what its database does differently. The
returned store is not yet opened: call ``await store.open()`` (or use ``async with``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import ConversationRecords, IdempotencyKeys, JobsAndEvents, ResponseRecords, ResponseStore
from .records import (
    FINAL_STATUSES,
    MAX_HISTORY_DEPTH,
    SCHEMA_VERSION,
    CancelResult,
    DuplicateItemId,
    EventPage,
    HistoryTooDeep,
    IdempotencyRecord,
    InvalidPageRequest,
    InvalidRecord,
    ItemPage,
    Job,
    JobOwner,
    JobWatch,
    LoggedEvent,
    StoreCorrupt,
    StoredConversation,
    StoredResponse,
    StoreError,
)


def _sqlite(url: str, **options: Any) -> ResponseStore:
    from .sqlite import SQLiteStore  # imported lazily so other backends need not load it

    return SQLiteStore(_sqlite_path(url), **options)


def _sqlite_path(url: str) -> str:
    """``sqlite:///a.db`` -> ``a.db``; ``sqlite:////abs/a.db`` -> ``/abs/a.db``."""
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise StoreError(f"sqlite store URL has no path: {url!r}")
    return rest


def _postgres(url: str, **options: Any) -> ResponseStore:
    from .postgres import PostgresStore  # lazily: asyncpg is only needed for this scheme

    return PostgresStore(url, **options)


# scheme -> factory(url, **options); options every backend accepts: max_history_depth.
BACKENDS: dict[str, Callable[..., ResponseStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_store(url: str, **options: Any) -> ResponseStore:
    """A store for ``url`` (not yet opened). Raises StoreError for unknown schemes."""
    if not url:
        raise StoreError("store URL is empty")
    if "://" not in url:
        return _sqlite("sqlite:///" + url, **options)  # a plain path is a SQLite file
    scheme = url.split("://", 1)[0].lower()  # not urlsplit: it raises on bad hosts ("[::1")
    factory = BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise StoreError(f"unsupported store URL scheme {scheme!r} (known: {known})")
    return factory(url, **options)


__all__ = [
    "BACKENDS",
    "FINAL_STATUSES",
    "MAX_HISTORY_DEPTH",
    "SCHEMA_VERSION",
    "CancelResult",
    "ConversationRecords",
    "DuplicateItemId",
    "EventPage",
    "HistoryTooDeep",
    "IdempotencyKeys",
    "IdempotencyRecord",
    "InvalidPageRequest",
    "InvalidRecord",
    "ItemPage",
    "Job",
    "JobOwner",
    "JobWatch",
    "JobsAndEvents",
    "LoggedEvent",
    "ResponseRecords",
    "ResponseStore",
    "StoreCorrupt",
    "StoreError",
    "StoredConversation",
    "StoredResponse",
    "open_store",
]
