"""Schema migrations of the PostgreSQL response store, applied at ``open()``.

Protocol: ``schema_migrations(version, applied_at)`` lists the versions applied. A store
opening takes ``pg_advisory_xact_lock(MIGRATION_LOCK)`` in one transaction, creates that
table if needed, applies every missing version in order and records it, then commits,
which releases the lock. Replicas starting at once queue on the lock; the later ones find
nothing to do. PostgreSQL DDL is transactional, so a failed migration leaves no trace. A
database carrying a version newer than :data:`MIGRATIONS` knows is refused.

Migration 1 is the SQLite backend's layout (see ``store/codec.py``): ``responses`` (JSON
kept as TEXT, because ``jsonb`` reorders keys and the served object must not change) and
``items``, which cascade-delete with their response.

Migration 2 (issue 7) adds the jobs and event logs of ``store/postgres_jobs.py``:

* ``background_jobs (response_id PRIMARY KEY REFERENCES responses ON DELETE CASCADE,
  tenant, kind ('background' | 'stream'), state ('queued' | 'running' | 'done'), attempts,
  claimed_by, lease_until (unix ms), cancel_requested, spec (JSON), created_at (unix ms))``
  with partial indexes on ``(created_at) WHERE state = 'queued'`` and ``(lease_until)
  WHERE state = 'running'``. A replica claims work with ``UPDATE ... WHERE response_id IN
  (SELECT ... WHERE state = 'queued' OR (state = 'running' AND lease_until < now) ORDER BY
  created_at LIMIT n FOR UPDATE SKIP LOCKED) RETURNING ...``: no two replicas get one job,
  none waits on another, and an expired lease hands a crashed replica's job on (the owner
  renews its lease while it runs). Every claim adds one to ``attempts``; the owner's writes
  lock the row and check ``(claimed_by, attempts)``, so a replica that lost its lease
  writes nothing. ``POST /v1/responses/{id}/cancel`` sets ``cancel_requested``; owners
  poll for it (no ``LISTEN``/``NOTIFY``: it would need a connection held outside the pool,
  and the poll costs one indexed query per replica per interval).
* ``stream_events (response_id REFERENCES responses ON DELETE CASCADE, sequence_number,
  type, payload, PRIMARY KEY (response_id, sequence_number))``: the SSE events of a
  background or stored streaming response, appended as they are produced;
  ``GET /v1/responses/{id}?stream=true&starting_after=N`` reads ``sequence_number > N``
  from the primary key and polls for more. Retention purges both with their response
  through the cascade.

SQLite gets the same two tables in its own migration 2 (one writer, so no SKIP LOCKED).
"""
from __future__ import annotations

import time

import asyncpg

from ..base import StoreError
from ..postgres_conversations import CONVERSATIONS_MIGRATION

# pg_advisory_xact_lock key serialising migrations: any fixed int64 (locks are per database).
MIGRATION_LOCK = 0x7472_746C_6C6D_0001

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            status TEXT NOT NULL,
            previous_response_id TEXT,
            schema_version INTEGER NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX responses_created_at ON responses (created_at)",
        """CREATE TABLE items (
            response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('input', 'output')),
            position INTEGER NOT NULL,
            item_id TEXT,
            payload TEXT NOT NULL,
            PRIMARY KEY (response_id, kind, position)
        )""",
        # cursor look-ups now; item_reference resolution by id later
        "CREATE INDEX items_item_id ON items (item_id)",
    ),
    2: (
        """CREATE TABLE background_jobs (
            response_id TEXT PRIMARY KEY REFERENCES responses (id) ON DELETE CASCADE,
            tenant TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('background', 'stream')),
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
            attempts INTEGER NOT NULL,
            claimed_by TEXT,
            lease_until BIGINT,
            cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
            spec TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )""",
        "CREATE INDEX background_jobs_queued ON background_jobs (created_at) WHERE state = 'queued'",
        "CREATE INDEX background_jobs_leases ON background_jobs (lease_until) WHERE state = 'running'",
        """CREATE TABLE stream_events (
            response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
            sequence_number INTEGER NOT NULL,
            type TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (response_id, sequence_number)
        )""",
    ),
    3: CONVERSATIONS_MIGRATION,  # conversations, idempotency keys (postgres_conversations.py)
}


async def apply_migrations(conn: asyncpg.Connection, where: str) -> None:
    """Apply the missing migrations. Call inside a transaction; ``where`` names the store
    (password redacted) in errors."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
    )
    applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    newest = max(MIGRATIONS)
    if applied and max(applied) > newest:
        raise StoreError(
            f"PostgreSQL store {where} has schema migration {max(applied)}, newer than "
            f"this gateway knows ({newest}); upgrade the gateway"
        )
    for version in sorted(set(MIGRATIONS) - applied):
        for statement in MIGRATIONS[version]:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            version, int(time.time()),
        )
