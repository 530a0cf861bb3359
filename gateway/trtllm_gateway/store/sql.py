"""The store over SQLAlchemy Core (asyncio): one implementation for every backend.

Protocol in ``base.py``, tables in ``schema.py``, rows in ``codec.py``. The methods live in
one mixin per concern (``responses.py``, ``jobs.py``, ``conversations.py``,
``idempotency.py``); each runs its statements in one of two transaction kinds:

* write (``_write``): SQLite runs it on its one writer connection under
  ``BEGIN IMMEDIATE``, so no other writer, in this process or another, comes in between;
  PostgreSQL runs it at READ COMMITTED on a pooled connection, where statements that must
  not race are single upserts or lock their rows (``FOR UPDATE``, and ``SKIP LOCKED`` to
  claim jobs). Those clauses are written once: SQLAlchemy leaves them out for SQLite,
  whose single writer needs no row locks.
* read (``_read``): one snapshot across statements (SQLite: ``BEGIN`` on a
  reader connection of the WAL file; PostgreSQL: REPEATABLE READ READ ONLY).

The machinery (engines, the two transaction kinds, errors, open/close and migrations) is
``transactions.SQLBase``, which every mixin builds on.

What differs between the databases is in the backend modules, ``sqlite.py`` and
``postgres.py``: how engines connect and transactions begin, how migrations are serialised
(``migrations/``), and the dialect's ``insert()``, whose ON CONFLICT clauses have one API in
both. The event loop never waits on the database (asyncpg is a socket protocol; SQLite
runs each whole transaction on a thread of its engine: ``sqlite.ThreadEngine``); large
payloads are encoded and decoded in a worker thread.
"""
from __future__ import annotations

from .base import ResponseStore
from .conversations import SQLConversations
from .idempotency import SQLIdempotency
from .jobs import SQLJobs
from .responses import SQLResponses


class SQLStore(SQLResponses, SQLJobs, SQLConversations, SQLIdempotency, ResponseStore):
    """The whole store on one database: every concern's queries over one ``SQLBase``."""
