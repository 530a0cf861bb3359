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

Migration 2 (issue 7; designed, not built) adds, in one more ``MIGRATIONS[2]`` entry:

* ``background_jobs (response_id TEXT PRIMARY KEY REFERENCES responses ON DELETE CASCADE,
  tenant TEXT, state TEXT CHECK (state IN ('queued','running','done','cancelled')),
  attempts INT, claimed_by TEXT, lease_until BIGINT, created_at BIGINT)`` with a partial
  index on ``(created_at) WHERE state = 'queued'``. A replica claims work with
  ``UPDATE background_jobs SET state='running', claimed_by=$me, lease_until=$now+$lease,
  attempts=attempts+1 WHERE response_id IN (SELECT response_id FROM background_jobs
  WHERE state='queued' OR (state='running' AND lease_until < $now) ORDER BY created_at
  LIMIT $n FOR UPDATE SKIP LOCKED) RETURNING *``: no two replicas get one job, none waits
  on another, and an expired lease hands a crashed replica's job on (the owner renews its
  lease while generating). ``POST /v1/responses/{id}/cancel`` sets ``state='cancelled'``
  and ``NOTIFY``s the owner's channel.
* ``stream_events (response_id TEXT REFERENCES responses ON DELETE CASCADE,
  sequence_number INT, type TEXT, payload TEXT, PRIMARY KEY (response_id,
  sequence_number))``: a background stream appends its SSE events as it goes;
  ``GET /v1/responses/{id}?stream=true&starting_after=N`` replays ``sequence_number > N``
  in order from the primary key, then tails new ones via ``LISTEN``/``NOTIFY`` (any
  replica can serve the resumed stream). Retention purges them with their response
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
