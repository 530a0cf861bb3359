"""Persisted event logs of responses, and following them live from any replica.

Protocol (docs/responses-api.md §3, plus resume): every event of a background response and
(unless ``--event-log background``) of a stored streaming response is appended to the store
(``stream_events``) with the
``sequence_number`` it was (or will be) sent with. ``GET /v1/responses/{id}?stream=true
&starting_after=N`` (:func:`follow`) sends the logged events after N as SSE frames, then
keeps reading the log until a terminal event (``response.completed|incomplete|failed``),
or until the log is complete without one (a cancelled response: its stream just ends).

* Writing (``event_log.py``): a log's events are queued and written in the background; a
  log's first write opens it, then the replica writes the queued events of all its logs
  together, at most once per :attr:`LogHub.batch_s` (half of ``--event-poll-interval-s``),
  in one transaction. A stored stream queues each event for its log and then sends it to
  its client (:class:`Delivery`, the driver's sink for SSE and WebSocket alike), so the log
  never adds latency to the live stream; it lags the client by at most a batch interval
  and a write. Its end is one fenced write of the final record, everything still queued,
  the closing events and the end of the log, before the closing events are sent
  (:meth:`ResponseLog.end`), as a background job ends.
* Ownership: a log is written by its job's owner only (``store.write_job`` and
  ``store.append_events`` are fenced by (replica, attempt)); a stored stream opens its job row on the first write
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import ApiError
from .event_log import EventLog, LogBatcher, logged
from .objects import stored
from .settings import GatewaySettings
from .sse import EventWriter, SSEWriter, encode, frame_raw
from .store import JobOwner, LoggedEvent, ResponseStore, StoredResponse

log = logging.getLogger("trtllm_gateway.events")

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
PAGE = 500  # events per store read while following


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
        self.closing = asyncio.Event()  # shutdown: followers end their streams
        self.batcher = LogBatcher(self)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.job_lease_s * 1000)

    @property
    def batch_s(self) -> float:
        """Least time between two writes of one log. Half a poll interval: a follower on
        another replica sees events a poll late anyway, one here is woken by each write."""
        return self.settings.event_poll_interval_s / 2

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


STORE_FAILED = "The response was generated but could not be stored."


def _unstored(resp: dict, closing: list[dict]) -> list[dict]:
    """``closing`` with its terminal event turned into ``response.failed`` (same number)."""
    if not closing or closing[-1]["type"] not in TERMINAL_EVENTS:
        return closing
    failed = dict(resp, status="failed", error={"code": "server_error", "message": STORE_FAILED})
    return closing[:-1] + [dict(closing[-1], type="response.failed", response=failed)]


class ResponseLog:
    """The event log of one stored streaming response: opened (with its ``in_progress``
    record) by the first write, its lease renewed through the hub, and ended by one fenced
    write of the final record, the last events and the end of the log (:meth:`end`)."""

    def __init__(self, hub: LogHub, record: StoredResponse, spec: dict | None = None) -> None:
        self.hub, self.record, self.spec = hub, record, spec  # spec: what ending it needs (job_endings)
        self.log = EventLog(hub, record.id, opener=self._open_job)
        self._ended = False

    async def _open_job(self, events: list[LoggedEvent]) -> JobOwner:
        owner = await self.hub.store.open_stream(self.record, self.hub.replica, self.hub.lease_ms, events,
                                                 spec=self.spec)
        if not self._ended:
            self.hub.register(self.record.id, Registration(owner.attempt, self._lost))
        return owner

    def _lost(self) -> None:
        self.log.lost = True
        self.hub.unregister(self.record.id)

    def add(self, rows: list[LoggedEvent]) -> None:
        self.log.add_rows(rows)

    async def end(self, resp: dict, closing: list[dict], rows: list[LoggedEvent]) -> list[dict]:
        """The closing events to send: as given once stored; when the write failed (store
        trouble, lease lost), with ``response.failed``, as recovery will store it.
        ``rows``: the closing events as logged (``logged``), encoded once for log and client."""
        self._ended = True
        rec = self.record
        try:
            self.log.add_rows(rows)  # queued: the fenced final write below takes them
            await self.log.finish(record=stored(resp, rec.tenant, rec.input_items,
                                                rec.previous_response_id), done=True)
            return closing
        except Exception:
            log.warning("could not store the end of %s (recovery closes it)", rec.id, exc_info=True)
            return _unstored(resp, closing)
        finally:
            self.hub.unregister(rec.id)


class Delivery:
    """The driver's sink for a live transport (SSE or WebSocket writer): a stored response's
    events are queued for its log, then written to the client, encoded once for both; the
    log is written in the background, so it never adds latency to the live stream. A stored
    response without a log (``--event-log background``) is saved once by ``save``, before
    its terminal event is sent, as a JSON reply's is; with a log, the log's end stores it."""

    committed = True

    def __init__(self, gw, writer: EventWriter, rlog: ResponseLog | None,
                 save: Callable[[dict], Awaitable[None]] | None = None) -> None:
        self.gw, self.writer, self.rlog, self.save = gw, writer, rlog, save
        self._logged: tuple[list[dict], list[str]] | None = None  # closing events as stored, encoded

    async def open(self) -> None:
        await self.writer.open()

    async def send(self, events: list[dict]) -> None:
        if self.rlog is None:
            return await self.writer.send_all(events)
        self.writer.number(events)
        rows = [logged(event) for event in events]
        self.rlog.add(rows)  # queued first (no wait): a cancel during the write cannot leave a gap
        await self.writer.write_batch(events, [row.payload for row in rows])

    async def persist(self, resp: dict, closing: list[dict]) -> list[dict]:
        self.writer.number(closing)
        if self.rlog is None:
            return closing if self.save is None else await self._saved(self.save, resp, closing)
        rows = [logged(event) for event in closing]
        self._logged = (closing, [row.payload for row in rows])
        return await self.rlog.end(resp, closing, rows)

    async def deliver(self, closing: list[dict]) -> None:
        # the events just stored keep their encoding; a replacement (_unstored) is encoded anew
        stored_as = self._logged
        payloads = stored_as[1] if stored_as and stored_as[0] is closing else [encode(e) for e in closing]
        await self.writer.write_batch(closing, payloads)
        await self.writer.close()

    @staticmethod
    async def _saved(save: Callable[[dict], Awaitable[None]], resp: dict, closing: list[dict]) -> list[dict]:
        try:
            await asyncio.shield(save(resp))
            return closing
        except Exception:  # told "stored", the client must not read "completed": say failed
            log.exception("could not store response %s", resp["id"])
            return _unstored(resp, closing)

    def abandon(self, resp: dict, closing: list[dict]) -> None:
        self.writer.stop_pings()
        if self.rlog is not None:  # the log ends consistent: closing events, cancelled record
            self.writer.number(closing)
            self.gw.spawn(self.rlog.end(resp, closing, [logged(event) for event in closing]))
        elif self.save is not None:  # the cancelled response is stored, as a JSON reply's is
            self.gw.spawn(quietly(self.save(resp), resp["id"]))


async def quietly(saving: Awaitable[None], response_id: str) -> None:
    """A save whose client is gone: a failure is logged, as nobody can be told."""
    try:
        await saving
    except Exception:  # nobody is listening any more; the failure is logged
        log.exception("could not store response %s", response_id)


def response_log(app: web.Application, g) -> ResponseLog | None:
    """The log of a stored streaming response (None when it is not stored, or when
    ``--event-log background`` keeps logs for background responses only)."""
    if not g.req.store or app[LOGS].settings.event_log != "stored":
        return None
    resp = g.state.response
    return ResponseLog(app[LOGS], stored(dict(resp, output=[]), g.tenant, g.req.input.items,
                                         g.req.previous_response_id), {"body": {"include": g.req.include}})


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
        which = ("background responses and responses created with stream=true and store=true"
                 if hub.settings.event_log == "stored" else "background responses")
        raise ApiError("invalid_request", f"This response has no event stream: only {which} have one.",
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
            if not page.open or hub.closing.is_set():
                return  # complete without a terminal event (cancelled), or the gateway is shutting down
            await hub.wait(response_id, hub.settings.event_poll_interval_s)
        page = await hub.store.read_events(response_id, tenant, cursor, PAGE)
