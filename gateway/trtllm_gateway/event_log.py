"""Writing event logs: every log of this replica in one batched write (``events.py`` reads them).

Protocol (``events.py``'s docstring says what the log is for): each response's events are
appended to the store (``stream_events``) with their ``sequence_number``, in order, only by
the job's owner (fenced by (replica, attempt)).

* :class:`EventLog` queues one response's events (already encoded: the exact JSON a client
  receives). Its own writes are the first (a stored stream's ``store.open_stream``, which
  makes it the owner) and :meth:`EventLog.finish` (everything queued plus the closing events
  and, usually, the final record and the end of the log). A log has at most one write in
  flight, so its events land in order and the end comes last.
* In between, the queued events of all the replica's logs go out together:
  :class:`LogBatcher` writes, at most once per ``hub.batch_s``, everything queued since in
  one transaction (``store.append_events``). The store pays a few transactions a second
  however many streams run and however fast they go, instead of one per event; a follower
  on this replica is woken after each write, one elsewhere reads at its next poll.
* A job lost to another replica (the fence refused the write) stops its log: nothing more
  is written (:class:`JobLost` for its owner). A failed batch keeps its events queued for
  the next one, or for ``finish``.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from .sse import encode
from .store import JobOwner, LoggedEvent, StoredResponse, StoreError

if TYPE_CHECKING:
    from .events import LogHub

log = logging.getLogger("trtllm_gateway.events")


def logged(event: dict) -> LoggedEvent:
    """A numbered event as its log row (the exact JSON a client receives)."""
    return LoggedEvent(event["sequence_number"], event["type"], encode(event))


class JobLost(Exception):
    """The job's lease went to another replica: stop without writing anything more."""


class EventLog:
    """Appends one response's events, in order (see the module docstring).

    ``owner`` is the job's fencing token; a stored stream has none until ``opener`` (its
    first write, ``store.open_stream``) returns it. The log's own writes run in a task
    under a lock, so a cancelled caller cannot let a later write overtake it.
    """

    def __init__(self, hub: LogHub, response_id: str, owner: JobOwner | None = None,
                 opener: Callable[[list[LoggedEvent]], Awaitable[JobOwner]] | None = None) -> None:
        self.hub, self.response_id, self.owner, self._opener = hub, response_id, owner, opener
        self._queued: list[LoggedEvent] = []
        self._opening: asyncio.Task | None = None   # the first write, while it runs
        self.batch: asyncio.Task | None = None      # the batcher's write holding our events
        self._held = False                          # finish() writes what is queued itself
        self._lock = asyncio.Lock()
        self.lost = False

    def add(self, events: list[dict]) -> None:
        """Queue numbered events; they are written in the background."""
        self.add_rows([logged(e) for e in events])

    def add_rows(self, rows: list[LoggedEvent]) -> None:
        """Queue events already encoded (``logged``)."""
        if self.lost or not rows:
            return
        self._queued.extend(rows)
        self._next()

    def _next(self) -> None:
        """Hand what is queued on: the first write opens the log, later ones are batched."""
        if self._held or self.lost or not self._queued or self._opening is not None:
            return
        if self.owner is None:
            self._opening = asyncio.ensure_future(self._open())
        else:
            self.hub.batcher.want(self)

    def take(self) -> list[LoggedEvent] | None:
        """For the batcher: the queued events, unless the log writes them itself."""
        if self._held or self.lost or self.owner is None or not self._queued:
            return None
        rows, self._queued = self._queued, []
        return rows

    def put_back(self, rows: list[LoggedEvent]) -> None:
        """A failed write's events, first again in the queue."""
        self._queued[:0] = rows

    async def _open(self) -> None:
        rows, self._queued = self._queued, []
        try:
            await self._write(rows)
        except JobLost:
            self.lost = True
        except Exception:  # kept queued: the next event (or finish) tries again
            log.warning("could not log events of %s", self.response_id, exc_info=True)
            self.put_back(rows)
            return
        finally:
            self._opening = None
        self._next()

    async def _write(self, batch: list[LoggedEvent], record: StoredResponse | None = None,
                     done: bool = False) -> None:
        task = asyncio.ensure_future(self._locked_write(batch, record, done))
        await asyncio.shield(task)

    async def _locked_write(self, batch: list[LoggedEvent], record: StoredResponse | None,
                            done: bool) -> None:
        async with self._lock:
            if self.owner is None:
                if self._opener is None:
                    raise ValueError("an EventLog without an owner needs an opener")
                self.owner = await self._opener(batch)
                batch = []
                if record is None and not done:
                    self.hub.notify(self.response_id)
                    return
            if not await self.hub.store.write_job(self.owner, self.response_id, events=batch,
                                                  record=record, done=done):
                raise JobLost(self.response_id)
            self.hub.notify(self.response_id)

    async def finish(self, events: Sequence[dict] = (), record: StoredResponse | None = None,
                     done: bool = True) -> None:
        """Write everything queued plus ``events`` (and ``record``) now, and wait for it.
        Raises JobLost when the job is no longer ours (nothing is written then)."""
        self._held = True  # the batcher leaves the log alone: this write takes what is queued
        try:
            for pending in (self._opening, self.batch):
                if pending is not None:
                    await asyncio.shield(pending)
            if self.lost:
                raise JobLost(self.response_id)
            batch, self._queued = self._queued + [logged(e) for e in events], []
            try:
                await self._write(batch, record, done)
            except JobLost:
                self.lost = True
                raise
            except StoreError:
                self.put_back(batch)  # a retry writes them (with the same numbers)
                raise
        finally:
            self._held = done  # a finished log takes no more writes; otherwise batches resume
            self._next()


class LogBatcher:
    """The replica's batched log writes: at most one transaction per ``hub.batch_s`` with
    the events queued in every log that asked (:meth:`want`) since the last one."""

    def __init__(self, hub: LogHub) -> None:
        self.hub = hub
        self._wanting: dict[EventLog, None] = {}  # in order of asking
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time before which no batch starts

    def want(self, elog: EventLog) -> None:
        self._wanting[elog] = None
        if self._task is not None or self._timer is not None:
            return  # the running batch schedules the next one when it ends
        loop = asyncio.get_running_loop()
        delay = self._due - loop.time()
        if delay > 0:
            self._timer = loop.call_later(delay, self._start)
        else:
            self._start()

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        wanting, self._wanting = self._wanting, {}
        self._due = asyncio.get_running_loop().time() + self.hub.batch_s
        taken: list[tuple[EventLog, list[LoggedEvent]]] = []
        for elog in wanting:
            rows = elog.take()
            if rows:
                elog.batch = self._task
                taken.append((elog, rows))
        try:
            await self._append(taken)
        finally:
            for elog, _ in taken:
                elog.batch = None
            self._task = None
            if self._wanting:
                self.want(next(iter(self._wanting)))

    async def _append(self, taken: list[tuple[EventLog, list[LoggedEvent]]]) -> None:
        if not taken:
            return
        try:
            result = await self.hub.store.append_events([(e.owner, e.response_id, rows) for e, rows in taken
                                                         if e.owner is not None])
        except Exception:  # kept queued: the next batch (or finish) writes them
            log.warning("could not log events of %d responses", len(taken), exc_info=True)
            for elog, rows in taken:
                elog.put_back(rows)
                self._wanting[elog] = None
            return
        for elog, rows in taken:
            if elog.response_id in result.lost:
                elog.lost = True
            elif elog.response_id in result.refused:
                log.warning("could not log events of %s: the store refused them", elog.response_id)
                elog.put_back(rows)  # finish's write fails the same way and ends the response failed
            else:
                self.hub.notify(elog.response_id)
