"""The store's tables, declared once for every backend (SQLAlchemy Core).

Each table names the migration that creates it (``info["migration"]``); the migrations'
DDL is compiled from these declarations for each dialect (``migrations/__init__.py``). The
layout is the one earlier releases created by hand in both backends, so their databases
open unchanged; row contents are described in ``codec.py``.

* migration 1: ``responses`` (JSON kept as TEXT: ``jsonb`` would reorder keys, and the
  served object must not change) and ``items``, keyed by (response, kind, position), with
  an index on ``item_id`` for cursors.
* migration 2: ``background_jobs`` (state queued -> running -> done, ``attempts`` raised by
  every claim, the owner ``claimed_by`` and its ``lease_until`` in unix ms,
  ``cancel_requested``, ``spec`` JSON), with partial indexes on the queued jobs' age and
  the running ones' leases; ``stream_events``, each response's SSE events keyed by
  (response, sequence_number).
* migration 3: ``conversations`` (``next_position``: where the next appended item goes, so
  positions only grow; ``updated_at``: retention purges idle ones by it),
  ``conversation_items`` (item ids unique per conversation: they are cursors) and
  ``idempotency_keys`` ((tenant, key) -> body hash, state, finished response).
* migration 4: an index on ``conversation_items.item_id`` alone, for ``item_reference``
  look-ups across a tenant's conversations.

Foreign keys cascade deletes in PostgreSQL. SQLite files never had them (and SQLite would
not enforce them without a pragma), so the SQLite DDL leaves them out and the store
deletes dependent rows itself, in both backends: the code path is the same.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData()


def _cascade(column: str) -> ForeignKey:
    return ForeignKey(column, ondelete="CASCADE")


def _where(condition: str) -> dict:
    """A partial index's condition, in both dialects."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", BigInteger, nullable=False),  # unix seconds
)

responses = Table(
    "responses", metadata,
    Column("id", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("previous_response_id", Text),
    Column("schema_version", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Index("responses_created_at", "created_at"),
    info={"migration": 1},
)

items = Table(
    "items", metadata,
    Column("response_id", Text, _cascade("responses.id"), primary_key=True),
    Column("kind", Text, CheckConstraint("kind IN ('input', 'output')"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("item_id", Text),
    Column("payload", Text, nullable=False),
    Index("items_item_id", "item_id"),
    sqlite_with_rowid=False, info={"migration": 1},
)

background_jobs = Table(
    "background_jobs", metadata,
    Column("response_id", Text, _cascade("responses.id"), primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("kind", Text, CheckConstraint("kind IN ('background', 'stream')"), nullable=False),
    Column("state", Text, CheckConstraint("state IN ('queued', 'running', 'done')"), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", Text),
    Column("lease_until", BigInteger),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("spec", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("background_jobs_queued", "created_at", **_where("state = 'queued'")),
    Index("background_jobs_leases", "lease_until", **_where("state = 'running'")),
    sqlite_with_rowid=False, info={"migration": 2},
)

stream_events = Table(
    "stream_events", metadata,
    Column("response_id", Text, _cascade("responses.id"), primary_key=True),
    Column("sequence_number", Integer, primary_key=True, autoincrement=False),
    Column("type", Text, nullable=False),
    Column("payload", Text, nullable=False),
    sqlite_with_rowid=False, info={"migration": 2},
)

conversations = Table(
    "conversations", metadata,
    Column("id", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("next_position", Integer, nullable=False),
    Column("metadata", Text, nullable=False),
    Index("conversations_updated_at", "updated_at"),
    sqlite_with_rowid=False, info={"migration": 3},
)

conversation_items = Table(
    "conversation_items", metadata,
    Column("conversation_id", Text, _cascade("conversations.id"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("item_id", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Index("conversation_items_item_id", "conversation_id", "item_id", unique=True),
    Index("conversation_items_by_item_id", "item_id", info={"migration": 4}),
    sqlite_with_rowid=False, info={"migration": 3},
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("tenant", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("body_hash", Text, nullable=False),
    Column("state", Text, CheckConstraint("state IN ('running', 'done')"), nullable=False),
    Column("response", Text),
    Column("created_at", BigInteger, nullable=False),
    Index("idempotency_keys_created_at", "created_at"),
    sqlite_with_rowid=False, info={"migration": 3},
)

# Rows keyed by response_id that go with their response.
RESPONSE_DEPENDENTS = (items.c.response_id, background_jobs.c.response_id, stream_events.c.response_id)
