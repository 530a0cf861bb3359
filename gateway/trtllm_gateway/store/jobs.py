"""Jobs and event logs, in SQL (protocol: ``base.JobsAndEvents``; tables: ``schema.py``).

A mixin of ``sql.SQLStore``, whose transactions it uses:

* claiming is one ``UPDATE ... FROM (SELECT ... ORDER BY created_at LIMIT n FOR UPDATE SKIP
  LOCKED)``: in PostgreSQL concurrent claimers skip each other's rows instead of waiting;
  in SQLite the one writer (``BEGIN IMMEDIATE``) claims alone. Two claimers never get one
  job, and an expired lease hands a crashed replica's job on;
* every fenced write (``write_job``; ``append_events``, several jobs' events at once) first
  reads the job rows ``FOR UPDATE`` and checks ``(claimed_by, attempts, state)``. A
  claimer's update of a row waits for that lock and a writer coming after a re-claim sees
  the new owner, so a replica that lost its lease never appends to, or finishes, a job
  another replica now runs;
* leases are renewed, and cancel flags read, for all of a replica's jobs in one statement
  (polled: ``LISTEN``/``NOTIFY`` would need a connection held outside the pool);
* ``read_events`` reads the response's status, the log's end and the job's state in one
  statement, and the events in the same snapshot.

Event payloads are stored as the exact JSON text that was (or will be) sent.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import codec
from .base import JobsAndEvents
from .codec import storable
from .records import (
    Appended,
    CancelResult,
    EventPage,
    InvalidRecord,
    Job,
    JobOwner,
    JobWatch,
    LoggedEvent,
    StoredResponse,
    StoreError,
)
from .responses import put_record
from .schema import background_jobs as jobs
from .schema import responses, stream_events
from .transactions import SQLBase

_JOB = (jobs.c.response_id, jobs.c.tenant, jobs.c.kind, jobs.c.attempts, jobs.c.spec, jobs.c.cancel_requested)
_RUNNING = jobs.c.state == "running"


def _claim_statement():
    """Claims, built once (replicas poll it every few tenths of a second while idle, and
    building it cost more than running it): up to ``:n`` claimable jobs, oldest first."""
    picked = (select(jobs.c.response_id)
              .where((jobs.c.state == "queued") | (_RUNNING & (jobs.c.lease_until < bindparam("at"))))
              .order_by(jobs.c.created_at).limit(bindparam("n")).with_for_update(skip_locked=True).subquery())
    return (update(jobs).where(jobs.c.response_id == picked.c.response_id)
            .values(state="running", claimed_by=bindparam("replica"), lease_until=bindparam("until"),
                    attempts=jobs.c.attempts + 1).returning(*_JOB))


_CLAIM = _claim_statement()
# Statements run per stream, built once and run with parameters (see ``responses._upsert``).
_INSERT_EVENTS = insert(stream_events)
# the running jobs among ``:keys`` (response id, replica, attempt), their rows locked in one order
_HELD = (select(jobs.c.response_id).with_for_update()
         .where(tuple_(jobs.c.response_id, jobs.c.claimed_by, jobs.c.attempts)
                .in_(bindparam("keys", expanding=True)), _RUNNING)
         .order_by(jobs.c.response_id))
_DONE = (update(jobs).where(jobs.c.response_id == bindparam("rid"))
         .values(state="done", lease_until=None))


@functools.cache
def _stream_job(dialect_insert: Callable[..., Any]) -> Any:
    """A stored stream's job row, unless a final save made it first."""
    return dialect_insert(jobs).on_conflict_do_nothing(index_elements=[jobs.c.response_id])


def _at(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else int(time.time() * 1000)


async def _append(conn: AsyncConnection, rows: list[dict]) -> None:
    if rows:
        await conn.execute(_INSERT_EVENTS, rows)


class SQLJobs(SQLBase, JobsAndEvents):
    async def enqueue_job(self, record: StoredResponse, spec: dict, events: list[LoggedEvent],
                          *, now_ms: int | None = None) -> None:
        encoded = await self._prepared(lambda: (codec.encode_record(record),
                                                codec.dumps(spec, f"{record.id} job spec")))
        rows, at = codec.event_rows(record.id, events), _at(now_ms)

        async def body(conn: AsyncConnection) -> None:
            enc, spec_text = encoded()
            if not await put_record(conn, self.insert, enc, if_absent=True):
                raise StoreError(f"response id {record.id!r} already exists")
            await conn.execute(insert(jobs).values(response_id=record.id, tenant=record.tenant, kind="background",
                                                   state="queued", attempts=0, spec=spec_text, created_at=at))
            await _append(conn, rows)

        await self._write(body)

    async def open_stream(self, record: StoredResponse, replica: str, lease_ms: int,
                          events: list[LoggedEvent], *, now_ms: int | None = None,
                          spec: dict | None = None) -> JobOwner:
        enc = await self._prepared(codec.encode_record, record)
        rows, at = codec.event_rows(record.id, events), _at(now_ms)
        job = {"response_id": record.id, "tenant": record.tenant, "kind": "stream", "state": "running",
               "attempts": 1, "claimed_by": replica, "lease_until": at + lease_ms,
               "spec": codec.dumps(spec or {}, f"{record.id} job spec"), "created_at": at}

        async def body(conn: AsyncConnection) -> None:
            await put_record(conn, self.insert, enc(), if_absent=True)  # a final save may have come first
            await conn.execute(_stream_job(self.insert), job)
            await _append(conn, rows)

        await self._write(body)
        return JobOwner(replica, 1)

    async def claim_jobs(self, replica: str, limit: int, lease_ms: int,
                         *, now_ms: int | None = None) -> list[Job]:
        at = _at(now_ms)
        params = {"at": at, "n": limit, "replica": replica, "until": at + lease_ms}
        return [codec.decode_job(row) for row in await self._rows(_CLAIM, write=True, params=params)]

    async def watch_jobs(self, replica: str, attempts: dict[str, int], lease_ms: int | None,
                         *, now_ms: int | None = None) -> JobWatch:
        if not attempts:
            return JobWatch(set(), set())
        owned = (tuple_(jobs.c.response_id, jobs.c.attempts).in_(list(attempts.items()))
                 & (jobs.c.claimed_by == replica) & _RUNNING)
        if lease_ms is None:
            rows = await self._rows(select(jobs.c.response_id, jobs.c.cancel_requested).where(owned))
        else:
            rows = await self._rows(update(jobs).where(owned).values(lease_until=_at(now_ms) + lease_ms)
                                    .returning(jobs.c.response_id, jobs.c.cancel_requested), write=True)
        return JobWatch(lost=set(attempts) - {r.response_id for r in rows},
                        cancel={r.response_id for r in rows if r.cancel_requested})

    async def write_job(self, owner: JobOwner, response_id: str, *, events: Sequence[LoggedEvent] = (),
                        record: StoredResponse | None = None, done: bool = False) -> bool:
        enc = None if record is None else await self._prepared(codec.encode_record, record)
        rows = codec.event_rows(response_id, events)
        held = {"keys": [(response_id, owner.replica, owner.attempt)]}

        async def body(conn: AsyncConnection) -> bool:
            if (await conn.execute(_HELD, held)).first() is None:
                return False
            await _append(conn, rows)
            if enc is not None:
                await put_record(conn, self.insert, enc())
            if done:
                await conn.execute(_DONE, {"rid": response_id})
            return True

        return await self._write(body)

    async def append_events(self, logs: Sequence[tuple[JobOwner, str, Sequence[LoggedEvent]]]) -> Appended:
        rows: dict[str, list[dict]] = {}
        refused: set[str] = set()
        for _owner, response_id, events in logs:
            try:
                rows[response_id] = codec.event_rows(response_id, events)
            except InvalidRecord:
                refused.add(response_id)
        keys = [(rid, owner.replica, owner.attempt) for owner, rid, _ in logs if rid in rows]
        if not keys:
            return Appended(set(), refused)

        async def body(conn: AsyncConnection) -> set[str]:
            owned = {row.response_id for row in (await conn.execute(_HELD, {"keys": keys})).all()}
            await _append(conn, [row for rid in owned for row in rows[rid]])
            return set(rows) - owned

        return Appended(await self._write(body), refused)

    async def request_cancel(self, response_id: str, tenant: str, replica: str, lease_ms: int,
                             *, now_ms: int | None = None) -> CancelResult:
        if not storable(response_id, tenant):
            return CancelResult("absent")
        at = _at(now_ms)
        flag = update(jobs).where(jobs.c.response_id == response_id)

        async def body(conn: AsyncConnection) -> CancelResult:
            job = (await conn.execute(select(jobs.c.kind, jobs.c.state, jobs.c.lease_until).with_for_update()
                                      .where(jobs.c.response_id == response_id, jobs.c.tenant == tenant))).first()
            if job is None or job.kind != "background":
                return CancelResult("absent")
            if job.state == "done":
                return CancelResult("done")
            if job.state == "running" and job.lease_until >= at:  # its owner sees the flag
                await conn.execute(flag.values(cancel_requested=True))
                return CancelResult("requested")
            claimed = (await conn.execute(flag.values(
                cancel_requested=True, state="running", claimed_by=replica, lease_until=at + lease_ms,
                attempts=jobs.c.attempts + 1).returning(*_JOB))).one()
            return CancelResult("claimed", codec.decode_job(claimed))

        return await self._write(body)

    async def read_events(self, response_id: str, tenant: str, after: int, limit: int) -> EventPage | None:
        if not storable(response_id, tenant):
            return None
        of_response = stream_events.c.response_id == response_id
        state = select(
            responses.c.status,
            select(func.max(stream_events.c.sequence_number)).where(of_response).scalar_subquery().label("last"),
            select(jobs.c.state).where(jobs.c.response_id == response_id).scalar_subquery().label("job"),
        ).where(responses.c.id == response_id, responses.c.tenant == tenant)
        # BIGINT: a cursor past every event (events.py allows 2**63 - 1) must still compare
        page = (select(stream_events.c.sequence_number, stream_events.c.type, stream_events.c.payload)
                .where(of_response, stream_events.c.sequence_number > literal(after, BigInteger))
                .order_by(stream_events.c.sequence_number).limit(limit))

        async def body(conn: AsyncConnection) -> EventPage | None:
            head = (await conn.execute(state)).first()
            if head is None:
                return None
            return EventPage(status=head.status, last=-1 if head.last is None else head.last,
                             open=head.job is not None and head.job != "done",
                             events=[LoggedEvent(*row) for row in (await conn.execute(page)).all()])

        return await self._read(body)
