"""Jobs and event logs of the PostgreSQL store (migration 2; protocol in ``store/base.py``).

Layout in ``store/migrations/postgres.py``. Replicas share the tables:

* claiming is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)``: concurrent
  claimers skip each other's rows instead of waiting, and never get the same job;
* every fenced write (``write_job``) first locks the job row ``FOR UPDATE`` and checks
  ``(claimed_by, attempts, state)``. A claimer's update of the row waits for that lock and
  a writer that comes after a re-claim sees the new owner, so a replica that lost its
  lease can never append to, or finish, a job another replica now runs;
* leases are renewed, and cancel flags read, for all of a replica's jobs in one statement.

Event payloads are stored as the exact JSON text that was (or will be) sent.
"""
from __future__ import annotations

import json
import time

import asyncpg

from .base import (
    CancelResult,
    EventPage,
    Job,
    JobOwner,
    JobWatch,
    LoggedEvent,
    StoreError,
)

_JOB_COLS = "j.response_id, j.tenant, j.kind, j.attempts, j.spec, j.cancel_requested"

_CLAIM = f"""
UPDATE background_jobs j SET state = 'running', claimed_by = $1, lease_until = $2,
    attempts = j.attempts + 1
FROM (SELECT response_id FROM background_jobs
      WHERE state = 'queued' OR (state = 'running' AND lease_until < $3)
      ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) picked
WHERE j.response_id = picked.response_id
RETURNING {_JOB_COLS}
"""

_RENEW = """
UPDATE background_jobs j SET lease_until = $4
FROM unnest($1::text[], $2::int[]) AS o(id, attempt)
WHERE j.response_id = o.id AND j.attempts = o.attempt AND j.claimed_by = $3 AND j.state = 'running'
RETURNING j.response_id, j.cancel_requested
"""
_OWNED = """
SELECT j.response_id, j.cancel_requested FROM background_jobs j
JOIN unnest($1::text[], $2::int[]) AS o(id, attempt) ON j.response_id = o.id AND j.attempts = o.attempt
WHERE j.claimed_by = $3 AND j.state = 'running'
"""

_INSERT_EVENTS = """
INSERT INTO stream_events (response_id, sequence_number, type, payload)
SELECT $1, t.seq, t.type, t.payload FROM unnest($2::int[], $3::text[], $4::text[]) AS t(seq, type, payload)
"""

_INSERT_JOB = """
INSERT INTO background_jobs (response_id, tenant, kind, state, attempts, claimed_by,
    lease_until, spec, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (response_id) DO NOTHING
"""


def _now() -> int:
    return int(time.time() * 1000)


def _job(row) -> Job:
    response_id, tenant, kind, attempts, spec, cancel = row
    return Job(response_id, tenant, kind, attempts, json.loads(spec), bool(cancel))


async def _insert_events(conn: asyncpg.Connection, response_id: str, events) -> None:
    if events:
        await conn.execute(_INSERT_EVENTS, response_id, [e.sequence_number for e in events],
                           [e.type for e in events], [e.payload for e in events])


def _lookupable(*keys: str) -> bool:
    from .postgres import _lookupable as check  # here: postgres.py imports this module

    return check(*keys)


def _checked_events(events) -> list[LoggedEvent]:
    events = list(events)
    if not _lookupable(*(e.payload for e in events)):  # PostgreSQL text takes neither
        raise StoreError("event payloads may not contain NUL characters or lone surrogates")
    return events


class PostgresJobs:
    """Job and event-log methods of PostgresStore (mixed in; uses its transactions)."""

    async def enqueue_job(self, record, spec, events, *, now_ms=None) -> None:
        enc, events = await self._encoded(record), _checked_events(events)
        spec_text = json.dumps(spec, separators=(",", ":"))
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            if await conn.fetchval("SELECT 1 FROM responses WHERE id = $1", record.id):
                raise StoreError(f"response id {record.id!r} already exists")
            await self._write_record(conn, record, enc)
            await conn.execute(_INSERT_JOB, record.id, record.tenant, "background", "queued", 0,
                               None, None, spec_text, at)
            await _insert_events(conn, record.id, events)

        await self._run("write", body)

    async def open_stream(self, record, replica, lease_ms, events, *, now_ms=None) -> JobOwner:
        enc, events = await self._encoded(record), _checked_events(events)
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            await self._write_record(conn, record, enc, if_absent=True)  # a final save may be first
            await conn.execute(_INSERT_JOB, record.id, record.tenant, "stream", "running", 1,
                               replica, at + lease_ms, "{}", at)
            await _insert_events(conn, record.id, events)

        await self._run("write", body)
        return JobOwner(replica, 1)

    async def claim_jobs(self, replica, limit, lease_ms, *, now_ms=None) -> list[Job]:
        at = now_ms if now_ms is not None else _now()
        rows = await self._run("write", lambda conn: conn.fetch(_CLAIM, replica, at + lease_ms, at, limit))
        return [_job(r) for r in rows]

    async def watch_jobs(self, replica, attempts, lease_ms, *, now_ms=None) -> JobWatch:
        if not attempts:
            return JobWatch(set(), set())
        at = now_ms if now_ms is not None else _now()
        ids, numbers = list(attempts), [attempts[i] for i in attempts]
        if lease_ms is None:
            rows = await self._run("read", lambda conn: conn.fetch(_OWNED, ids, numbers, replica))
        else:
            rows = await self._run("write", lambda conn: conn.fetch(
                _RENEW, ids, numbers, replica, at + lease_ms))
        return JobWatch(lost=set(attempts) - {r[0] for r in rows}, cancel={r[0] for r in rows if r[1]})

    async def write_job(self, owner, response_id, *, events=(), record=None, done=False) -> bool:
        enc = await self._encoded(record) if record is not None else None
        events = _checked_events(events)

        async def body(conn):
            held = await conn.fetchval(
                "SELECT 1 FROM background_jobs WHERE response_id = $1 AND claimed_by = $2 "
                "AND attempts = $3 AND state = 'running' FOR UPDATE",
                response_id, owner.replica, owner.attempt)
            if not held:
                return False
            await _insert_events(conn, response_id, events)
            if record is not None:
                await self._write_record(conn, record, enc)
            if done:
                await conn.execute("UPDATE background_jobs SET state = 'done', lease_until = NULL "
                                   "WHERE response_id = $1", response_id)
            return True

        return await self._run("write", body)

    async def request_cancel(self, response_id, tenant, replica, lease_ms, *,
                             now_ms=None) -> CancelResult:
        if not _lookupable(response_id, tenant):
            return CancelResult("absent")
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            row = await conn.fetchrow(
                "SELECT kind, state, lease_until FROM background_jobs "
                "WHERE response_id = $1 AND tenant = $2 FOR UPDATE", response_id, tenant)
            if row is None or row["kind"] != "background":
                return CancelResult("absent")
            if row["state"] == "done":
                return CancelResult("done")
            if row["state"] == "running" and row["lease_until"] >= at:
                await conn.execute("UPDATE background_jobs SET cancel_requested = TRUE "
                                   "WHERE response_id = $1", response_id)
                return CancelResult("requested")
            claimed = await conn.fetchrow(
                "UPDATE background_jobs j SET cancel_requested = TRUE, state = 'running', "
                "claimed_by = $2, lease_until = $3, attempts = j.attempts + 1 "
                f"WHERE j.response_id = $1 RETURNING {_JOB_COLS}", response_id, replica, at + lease_ms)
            return CancelResult("claimed", _job(claimed))

        return await self._run("write", body)

    async def read_events(self, response_id, tenant, after, limit) -> EventPage | None:
        if not _lookupable(response_id, tenant):
            return None

        async def body(conn):
            status = await conn.fetchval(
                "SELECT status FROM responses WHERE id = $1 AND tenant = $2", response_id, tenant)
            if status is None:
                return None
            last = await conn.fetchval(
                "SELECT max(sequence_number) FROM stream_events WHERE response_id = $1", response_id)
            state = await conn.fetchval(
                "SELECT state FROM background_jobs WHERE response_id = $1", response_id)
            rows = await conn.fetch(
                "SELECT sequence_number, type, payload FROM stream_events WHERE response_id = $1 "
                "AND sequence_number > $2 ORDER BY sequence_number LIMIT $3", response_id, after, limit)
            return EventPage(status=status, last=-1 if last is None else last,
                             open=state is not None and state != "done",
                             events=[LoggedEvent(*r) for r in rows])

        return await self._run("read", body)
