"""Jobs and event logs of the SQLite store (migration 2; protocol in ``store/base.py``).

``background_jobs`` holds one row per background response and per stored streaming
response: ``state`` queued -> running -> done, ``attempts`` (raised by every claim),
``claimed_by`` and ``lease_until`` (unix ms) of the current owner, ``cancel_requested``,
and ``spec`` (JSON: what a background job runs). ``stream_events`` holds each response's
SSE events keyed by (response_id, sequence_number).

SQLite has one writer at a time, so every claim and every fenced write runs in one
``BEGIN IMMEDIATE`` transaction (``SQLiteStore._write``): check, then update, with no
other writer in between, from this process or another on the same file. That is the
single-host equivalent of PostgreSQL's ``FOR UPDATE SKIP LOCKED``: two claimers never get
one job. SQLite enforces no foreign keys here; ``delete``/``purge_older_than`` remove these
rows with their response.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from . import codec
from .base import (
    CancelResult,
    EventPage,
    Job,
    JobOwner,
    JobWatch,
    LoggedEvent,
    StoredResponse,
    StoreError,
)

if TYPE_CHECKING:
    import aiosqlite

JOBS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE background_jobs (
        response_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('background', 'stream')),
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
        attempts INTEGER NOT NULL,
        claimed_by TEXT,
        lease_until INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX background_jobs_queued ON background_jobs(created_at) WHERE state = 'queued'",
    "CREATE INDEX background_jobs_leases ON background_jobs(lease_until) WHERE state = 'running'",
    """CREATE TABLE stream_events (
        response_id TEXT NOT NULL,
        sequence_number INTEGER NOT NULL,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (response_id, sequence_number)
    ) WITHOUT ROWID""",
)

_JOB_COLS = "response_id, tenant, kind, attempts, spec, cancel_requested"

_CLAIM = f"""
UPDATE background_jobs SET state = 'running', claimed_by = ?, lease_until = ?,
    attempts = attempts + 1
WHERE response_id IN (
    SELECT response_id FROM background_jobs
    WHERE state = 'queued' OR (state = 'running' AND lease_until < ?)
    ORDER BY created_at LIMIT ?)
RETURNING {_JOB_COLS}
"""

# the caller's (response_id, attempt) pairs that it still owns
_OWNED = """
SELECT j.response_id, j.cancel_requested FROM background_jobs j
JOIN json_each(?) p ON j.response_id = json_extract(p.value, '$[0]')
    AND j.attempts = json_extract(p.value, '$[1]')
WHERE j.claimed_by = ? AND j.state = 'running'
"""

_INSERT_EVENT = ("INSERT INTO stream_events (response_id, sequence_number, type, payload) "
                 "VALUES (?, ?, ?, ?)")


def _now() -> int:
    return int(time.time() * 1000)


def _job(row) -> Job:
    response_id, tenant, kind, attempts, spec, cancel = row
    return Job(response_id, tenant, kind, attempts, json.loads(spec), bool(cancel))


async def _insert_events(conn: "aiosqlite.Connection", response_id: str,
                         events: list[LoggedEvent]) -> None:
    await conn.executemany(_INSERT_EVENT, [
        (response_id, e.sequence_number, e.type, e.payload) for e in events])


class SQLiteJobs:
    """Job and event-log methods of SQLiteStore (mixed in; uses its transactions)."""

    async def _encode(self, record: StoredResponse | None) -> codec.EncodedRecord | None:
        return None if record is None else await asyncio.to_thread(codec.encode_record, record)

    async def _absent(self, conn: "aiosqlite.Connection", response_id: str) -> bool:
        rows = await conn.execute_fetchall("SELECT 1 FROM responses WHERE id = ?", (response_id,))
        return not rows

    async def enqueue_job(self, record, spec, events, *, now_ms=None) -> None:
        enc = await self._encode(record)
        spec_text = json.dumps(spec, separators=(",", ":"))
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            if not await self._absent(conn, record.id):
                raise StoreError(f"response id {record.id!r} already exists")
            await self._write_record(conn, record, enc)
            await conn.execute(
                "INSERT INTO background_jobs (response_id, tenant, kind, state, attempts, spec, "
                "created_at) VALUES (?, ?, 'background', 'queued', 0, ?, ?)",
                (record.id, record.tenant, spec_text, at))
            await _insert_events(conn, record.id, events)

        await self._write(body)

    async def open_stream(self, record, replica, lease_ms, events, *, now_ms=None) -> JobOwner:
        enc = await self._encode(record)
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            if await self._absent(conn, record.id):  # else the final save came first
                await self._write_record(conn, record, enc)
            await conn.execute(
                "INSERT INTO background_jobs (response_id, tenant, kind, state, attempts, "
                "claimed_by, lease_until, spec, created_at) "
                "VALUES (?, ?, 'stream', 'running', 1, ?, ?, '{}', ?) "
                "ON CONFLICT (response_id) DO NOTHING",
                (record.id, record.tenant, replica, at + lease_ms, at))
            await _insert_events(conn, record.id, events)

        await self._write(body)
        return JobOwner(replica, 1)

    async def claim_jobs(self, replica, limit, lease_ms, *, now_ms=None) -> list[Job]:
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            return await conn.execute_fetchall(_CLAIM, (replica, at + lease_ms, at, limit))

        return [_job(r) for r in await self._write(body)]

    async def watch_jobs(self, replica, attempts, lease_ms, *, now_ms=None) -> JobWatch:
        if not attempts:
            return JobWatch(set(), set())
        at = now_ms if now_ms is not None else _now()
        pairs = json.dumps([[rid, n] for rid, n in attempts.items()])

        async def body(conn):
            owned = await conn.execute_fetchall(_OWNED, (pairs, replica))
            if lease_ms is not None and owned:
                await conn.execute(
                    "UPDATE background_jobs SET lease_until = ? "
                    "WHERE response_id IN (SELECT value FROM json_each(?))",
                    (at + lease_ms, json.dumps([r[0] for r in owned])))
            return owned

        run = self._write if lease_ms is not None else self._read
        owned = await run(body)
        return JobWatch(lost=set(attempts) - {r[0] for r in owned},
                        cancel={r[0] for r in owned if r[1]})

    async def write_job(self, owner, response_id, *, events=(), record=None, done=False) -> bool:
        enc = await self._encode(record)

        async def body(conn):
            held = await conn.execute_fetchall(
                "SELECT 1 FROM background_jobs WHERE response_id = ? AND claimed_by = ? "
                "AND attempts = ? AND state = 'running'",
                (response_id, owner.replica, owner.attempt))
            if not held:
                return False
            await _insert_events(conn, response_id, list(events))
            if record is not None:
                await self._write_record(conn, record, enc)
            if done:
                await conn.execute(
                    "UPDATE background_jobs SET state = 'done', lease_until = NULL "
                    "WHERE response_id = ?", (response_id,))
            return True

        return await self._write(body)

    async def request_cancel(self, response_id, tenant, replica, lease_ms, *,
                             now_ms=None) -> CancelResult:
        at = now_ms if now_ms is not None else _now()

        async def body(conn):
            rows = await conn.execute_fetchall(
                "SELECT kind, state, lease_until FROM background_jobs "
                "WHERE response_id = ? AND tenant = ?", (response_id, tenant))
            if not rows or rows[0][0] != "background":
                return CancelResult("absent")
            _, state, lease_until = rows[0]
            if state == "done":
                return CancelResult("done")
            if state == "running" and lease_until >= at:
                await conn.execute("UPDATE background_jobs SET cancel_requested = 1 "
                                   "WHERE response_id = ?", (response_id,))
                return CancelResult("requested")
            claimed = await conn.execute_fetchall(
                "UPDATE background_jobs SET cancel_requested = 1, state = 'running', "
                "claimed_by = ?, lease_until = ?, attempts = attempts + 1 "
                f"WHERE response_id = ? RETURNING {_JOB_COLS}",
                (replica, at + lease_ms, response_id))
            return CancelResult("claimed", _job(claimed[0]))

        return await self._write(body)

    async def read_events(self, response_id, tenant, after, limit) -> EventPage | None:
        async def body(conn):
            status = await conn.execute_fetchall(
                "SELECT status FROM responses WHERE id = ? AND tenant = ?", (response_id, tenant))
            if not status:
                return None
            last = await conn.execute_fetchall(
                "SELECT max(sequence_number) FROM stream_events WHERE response_id = ?",
                (response_id,))
            state = await conn.execute_fetchall(
                "SELECT state FROM background_jobs WHERE response_id = ?", (response_id,))
            rows = await conn.execute_fetchall(
                "SELECT sequence_number, type, payload FROM stream_events "
                "WHERE response_id = ? AND sequence_number > ? "
                "ORDER BY sequence_number LIMIT ?", (response_id, after, limit))
            last_seq = last[0][0] if last and last[0][0] is not None else -1
            return EventPage(status=status[0][0], last=last_seq,
                             open=bool(state) and state[0][0] != "done",
                             events=[LoggedEvent(*r) for r in rows])

        return await self._read(body)
