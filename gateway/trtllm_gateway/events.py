"""Persisted event logs of responses, and following them live from any replica.

Protocol (docs/responses-api.md §3, plus resume): every event of a background response and of a
stored streaming response is appended to the store (``stream_events``) with the
``sequence_number`` it was (or will be) sent with. ``GET /v1/responses/{id}?stream=true
&starting_after=N`` (:func:`follow`) sends the logged events after N as SSE frames, then
keeps reading the log until a terminal event (``response.completed|incomplete|failed``),
or until the log is complete without one (a cancelled response: its stream just ends).

* Writing (:class:`EventLog`): events are queued and written by one flusher task per log,
  which takes everything queued so far in one transaction (group commit: one write per
  event when idle, bigger batches under load). A stored stream sends each event to its
  client first and logs it right after (:class:`LoggingWriter`, for SSE and WebSocket
  alike), so the log never adds latency to the live stream; it lags the client by at most
  one in-flight write.
* Ownership: a log is written by its job's owner only (``store.write_job`` is fenced by
  (replica, attempt)); a stored stream opens its job row on the first write
  (``store.open_stream``). The owner's :class:`LogHub` registration keeps the lease
  renewed (``background.py``'s watch loop); a log whose owner stops renewing is closed by
  another replica (recovery, ``background.py``).
* Following: a follower polls the store every ``--event-poll-interval-s``; a follower on
  the replica that writes the log is woken at once after each write (:class:`LogHub`
  wake-ups). No ``LISTEN``/``NOTIFY``: polling works the same on SQLite and PostgreSQL.
  The follower's own client leaving changes nothing for the response.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from .errors import ApiError
from .settings import GatewaySettings
from .sse import SSEWriter, dumps, frame_raw
from .store import JobOwner, LoggedEvent, ResponseStore, StoredResponse, StoreError

log = logging.getLogger("trtllm_gateway.events")

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
PAGE = 500  # events per store read while following


def logged(event: dict) -> LoggedEvent:
    """A numbered event as its log row (the exact JSON a client receives)."""
    return LoggedEvent(event["sequence_number"], event["type"], dumps(event))


@dataclass
class Registration:
    attempt: int
    on_lost: Callable[[], None]                  # the lease went to another replica
    on_cancel: Callable[[], None] | None = None  # a cancel was requested (background jobs)


class LogHub:
    """This replica's side of the logs: its identity, the jobs whose leases it renews, and
    in-process wake-ups for followers of logs it writes."""

    def __init__(self, store: ResponseStore, settings: GatewaySettings) -> None:
        self.store = store
        self.settings = settings
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.owned: dict[str, Registration] = {}
        self._wakeups: dict[str, set[asyncio.Event]] = {}

    @property
    def lease_ms(self) -> int:
        return int(self.settings.job_lease_s * 1000)

    def register(self, response_id: str, registration: Registration) -> None:
        self.owned[response_id] = registration

    def unregister(self, response_id: str) -> None:
        self.owned.pop(response_id, None)

    def notify(self, response_id: str) -> None:
        for event in self._wakeups.get(response_id, ()):
            event.set()

    async def wait(self, response_id: str, timeout: float) -> None:
        """Until this replica writes to the log, or ``timeout`` (another replica may)."""
        event = asyncio.Event()
        waiters = self._wakeups.setdefault(response_id, set())
        waiters.add(event)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiters.discard(event)
            if not waiters:
                self._wakeups.pop(response_id, None)


LOGS = web.AppKey("event_logs", LogHub)


class JobLost(Exception):
    """The job's lease went to another replica: stop without writing anything more."""


class EventLog:
    """Appends one response's events, in order, through one flusher task (group commit).

    ``owner`` is the job's fencing token; a stored stream has none until ``opener`` (its
    first write, ``store.open_stream``) returns it. Writes never overlap: each runs in its
    own task under a lock, so a cancelled caller cannot let a later write overtake it.
    """

    def __init__(self, hub: LogHub, response_id: str, owner: JobOwner | None = None,
                 opener: Callable[[list[LoggedEvent]], Awaitable[JobOwner]] | None = None) -> None:
        self.hub, self.response_id, self.owner, self._opener = hub, response_id, owner, opener
        self._queued: list[LoggedEvent] = []
        self._flusher: asyncio.Task | None = None
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
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._queued and not self.lost:
            batch, self._queued = self._queued, []
            try:
                await self._write(batch)
            except JobLost:
                self.lost = True
            except Exception:  # noqa: BLE001 - store trouble: keep them queued, the next write retries
                log.warning("could not log events of %s", self.response_id, exc_info=True)
                self._queued[:0] = batch
                return

    async def _write(self, batch: list[LoggedEvent], record: StoredResponse | None = None,
                     done: bool = False) -> None:
        task = asyncio.ensure_future(self._locked_write(batch, record, done))
        await asyncio.shield(task)

    async def _locked_write(self, batch: list[LoggedEvent], record: StoredResponse | None,
                            done: bool) -> None:
        async with self._lock:
            if self.owner is None:
                self.owner = await self._opener(batch)
                batch = []
                if record is None and not done:
                    self.hub.notify(self.response_id)
                    return
            if not await self.hub.store.write_job(self.owner, self.response_id, events=batch,
                                                  record=record, done=done):
                raise JobLost(self.response_id)
            self.hub.notify(self.response_id)

    async def finish(self, events: list[dict] = (), record: StoredResponse | None = None,
                     done: bool = True) -> None:
        """Write everything queued plus ``events`` (and ``record``), and wait for it.
        Raises JobLost when the job is no longer ours (nothing is written then)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self.lost:
            raise JobLost(self.response_id)
        batch, self._queued = self._queued + [logged(e) for e in events], []
        try:
            await self._write(batch, record, done)
        except JobLost:
            self.lost = True
            raise
        except StoreError:
            self._queued[:0] = batch  # a retry writes them (with the same numbers)
            raise


class ResponseLog:
    """The event log of one stored streaming response, behind a live writer (SSE or WebSocket):
    its job is registered with the hub (lease renewal) until the log is finished."""

    def __init__(self, hub: LogHub, gw, record: StoredResponse) -> None:
        self.hub, self.record, self.gw = hub, record, gw
        self.log = EventLog(hub, record.id, opener=self._open_job)
        self._finished = False

    async def _open_job(self, events: list[LoggedEvent]) -> JobOwner:
        owner = await self.hub.store.open_stream(self.record, self.hub.replica, self.hub.lease_ms, events)
        if not self._finished:
            self.hub.register(self.record.id, Registration(owner.attempt, self._lost))
        return owner

    def _lost(self) -> None:
        self.log.lost = True
        self.hub.unregister(self.record.id)

    def add(self, row: LoggedEvent) -> None:
        self.log.add_rows([row])

    async def _finish(self) -> None:
        try:
            await self.log.finish()
        except Exception:  # noqa: BLE001 - JobLost, store trouble: another replica closes it
            log.warning("event log of %s left unfinished (recovery closes it)", self.record.id,
                        exc_info=True)
        finally:
            self.hub.unregister(self.record.id)

    def finish_detached(self) -> asyncio.Task | None:
        """Finishes the log outside the handler (which the client leaving cancels); the app's
        cleanup waits for it before it closes the store. Only the first call does anything."""
        if self._finished:
            return None
        self._finished = True
        task = asyncio.ensure_future(self._finish())
        self.gw.background.add(task)
        task.add_done_callback(self.gw.background.discard)
        return task

    async def finish(self) -> None:
        task = self.finish_detached()
        if task is not None:
            await asyncio.shield(task)


class LoggingWriter:
    """Mixin for an EventWriter: each event goes to the client, then to ``self.response_log``,
    encoded once for both (the transport's ``_write_encoded``)."""

    response_log: ResponseLog

    async def _write(self, event: dict) -> None:
        row = logged(event)
        await self._write_encoded(event, row.payload)
        self.response_log.add(row)

    async def close(self) -> None:
        await super().close()
        await self.response_log.finish()

    def stop_pings(self) -> None:
        """Cancellation paths (the client left): the log is closed in the background."""
        super().stop_pings()
        self.response_log.finish_detached()


class LoggedSSEWriter(LoggingWriter, SSEWriter):
    """The SSE writer of a stored streaming response."""

    def __init__(self, request: web.Request, response_log: ResponseLog) -> None:
        super().__init__(request, response_log.hub.settings.ping_interval_s)
        self.response_log = response_log


def response_log(gw, app: web.Application, g) -> ResponseLog | None:
    """The log of a stored streaming response (None when not stored, or no log hub)."""
    if not g.req.store or LOGS not in app:
        return None
    resp = g.state.response
    record = StoredResponse(id=resp["id"], tenant=g.tenant, created_at=resp["created_at"],
                            status=resp["status"], response=dict(resp, output=[]),
                            input_items=g.req.input.items,
                            previous_response_id=g.req.previous_response_id)
    return ResponseLog(app[LOGS], gw, record)


def sse_writer(gw, request: web.Request, g) -> SSEWriter:
    """The SSE writer of ``generation.stream``: logged (resumable) when the response is stored."""
    rlog = response_log(gw, request.app, g)
    return SSEWriter(request, gw.settings.ping_interval_s) if rlog is None else LoggedSSEWriter(request, rlog)


class ReplayWriter(SSEWriter):
    """Writes logged events as they were numbered (no renumbering)."""

    async def send_logged(self, event: LoggedEvent) -> None:
        await self.write_frame(frame_raw(event.type, event.payload))


#: Sequence numbers are stored as 64-bit integers.
MAX_SEQUENCE = 2**63 - 1


def starting_after(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < -1:
        raise ApiError("invalid_request", "Invalid 'starting_after': expected an integer >= 0.",
                       param="starting_after")
    return min(value, MAX_SEQUENCE)  # past every event; larger values overflow the stores' BIGINT


async def follow(gw, request: web.Request, response_id: str, tenant: str, after: int) -> web.StreamResponse:
    """SSE of the logged events after ``after``, then live ones, until the log ends."""
    hub = request.app[LOGS]
    with gw.metrics.store_op("read_events"):
        page = await hub.store.read_events(response_id, tenant, after, PAGE)
    if page is None:
        raise ApiError("not_found", f"Response with id '{response_id}' not found.", param="response_id")
    if page.last < 0 and not page.open:
        raise ApiError("invalid_request", "This response has no event stream: only background "
                       "responses and responses created with stream=true and store=true have one.",
                       param="stream")
    writer = ReplayWriter(request, gw.settings.ping_interval_s)
    await writer.open()
    try:
        await _relay(hub, writer, page, response_id, tenant, after)
    except ConnectionError:
        writer.stop_pings()
        return writer.response
    await writer.close()
    return writer.response


async def _relay(hub: LogHub, writer: ReplayWriter, page, response_id: str, tenant: str, cursor: int) -> None:
    while page is not None:
        for event in page.events:
            await writer.send_logged(event)
            cursor = event.sequence_number
            if event.type in TERMINAL_EVENTS:
                return
        if not page.events:
            if not page.open:
                return  # complete without a terminal event (cancelled)
            await hub.wait(response_id, hub.settings.event_poll_interval_s)
        page = await hub.store.read_events(response_id, tenant, cursor, PAGE)
