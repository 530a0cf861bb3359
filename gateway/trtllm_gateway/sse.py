"""The only writer of Server-Sent Events frames (docs/responses-api.md §3).

Frame: ``event: <type>\\ndata: <json>\\n\\n`` with LF line ends. The events the driver
hands over together (one service Delta's, the closing ones) go out in one ``write()``, so a
frame is never split by another writer (the keep-alive task) and a batch costs one
transport write, not one per event. ``sequence_number`` is assigned by
:class:`EventWriter`, from 0 by 1, in write order (the one numbering of every transport:
``websocket.py`` subclasses it too). Idle streams get a ``: ping`` comment every
``ping_interval`` seconds. There is no ``[DONE]`` sentinel. JSON strings escape every
control character, so ``data:`` always fits on one line.

Every event is encoded once (:func:`encode`), for its client and its event log alike; the
delta events, nearly all of a stream, come from templates that give exactly ``dumps``'s text.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Sequence

from aiohttp import web

PING = b": ping\n\n"
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
}

#: The one JSON encoding of events (SSE, WebSocket, event log): compact, UTF-8 kept.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_str = json.encoder.encode_basestring  # dumps's encoder of a str (ensure_ascii=False)


def _text_delta(e: dict) -> str | None:
    if e["logprobs"]:
        return None
    return (f'{{"type":{_str(e["type"])},"item_id":{_str(e["item_id"])},"output_index":{e["output_index"]:d},'
            f'"content_index":{e["content_index"]:d},"delta":{_str(e["delta"])},"logprobs":[],'
            f'"sequence_number":{e["sequence_number"]:d}}}')


def _content_delta(e: dict) -> str:
    return (f'{{"type":{_str(e["type"])},"item_id":{_str(e["item_id"])},"output_index":{e["output_index"]:d},'
            f'"content_index":{e["content_index"]:d},"delta":{_str(e["delta"])},'
            f'"sequence_number":{e["sequence_number"]:d}}}')


def _call_delta(e: dict) -> str:
    return (f'{{"type":{_str(e["type"])},"item_id":{_str(e["item_id"])},"output_index":{e["output_index"]:d},'
            f'"delta":{_str(e["delta"])},"sequence_number":{e["sequence_number"]:d}}}')


#: The delta events' exact key sequences (as stream_items builds them, numbered) -> template.
#: An event of another shape, or a template that declines (None), is encoded by ``dumps``.
_TEMPLATES: dict[tuple[str, ...], Callable[[dict], str | None]] = {
    ("type", "item_id", "output_index", "content_index", "delta", "logprobs", "sequence_number"): _text_delta,
    ("type", "item_id", "output_index", "content_index", "delta", "sequence_number"): _content_delta,
    ("type", "item_id", "output_index", "delta", "sequence_number"): _call_delta,
}


def encode(event: dict) -> str:
    """``dumps(event)``; a delta event from its template (in under half the time)."""
    template = _TEMPLATES.get(tuple(event)) if len(event) <= 7 else None
    return (template(event) if template is not None else None) or dumps(event)


def frame(event: dict) -> bytes:
    """One SSE frame for an event dict (which already carries its sequence_number)."""
    return frame_raw(event["type"], encode(event))


def frame_raw(event_type: str, payload: str) -> bytes:
    """One SSE frame for an event already encoded as JSON."""
    return frame_text(event_type, payload).encode()


def frame_text(event_type: str, payload: str) -> str:
    """The text of one SSE frame: the one place the frame format is spelled."""
    return f"event: {event_type}\ndata: {payload}\n\n"


class EventWriter:
    """Numbers events in write order and hands each to ``_write`` (one per transport)."""

    response: web.StreamResponse  # what the handler returns (a WebSocket's own response)

    def __init__(self) -> None:
        self.sequence = 0

    async def open(self) -> None:
        """Before the first event (SSE: send the headers)."""

    async def close(self) -> None:
        """After the last event of the response."""

    def stop_pings(self) -> None:
        """The client left: stop any keep-alive task (synchronous, for cancellation paths)."""

    def number(self, events: list[dict]) -> None:
        """Number events that will be written in this order (e.g. logged first)."""
        for event in events:
            event["sequence_number"] = self.sequence
            self.sequence += 1

    async def send(self, event: dict) -> None:
        await self.send_all([event])

    async def send_all(self, events: Iterable[dict]) -> None:
        """Numbers and writes ``events`` together."""
        events = list(events)
        self.number(events)
        await self.write_batch(events, [encode(e) for e in events])

    async def write_batch(self, events: Sequence[dict], payloads: Sequence[str]) -> None:
        """Writes numbered ``events`` whose JSON texts are ``payloads`` (encoded once, also for
        the event log), in order; SSE writes them at once."""
        for event, payload in zip(events, payloads, strict=True):
            await self.write_encoded(event, payload)

    async def write_encoded(self, event: dict, payload: str) -> None:
        """Writes numbered ``event`` whose JSON is ``payload``."""
        raise NotImplementedError


class _EventStream(web.StreamResponse):
    """A StreamResponse whose headers go out with its first events rather than in a send of
    their own (aiohttp's class attribute, which its own ``web.Response`` sets the same way).
    Only for writers whose first events follow ``open()`` at once (the driver's, a replay's):
    there it delays nothing and saves one send, and one wake-up of the client, per stream.
    A follower may wait for its first event, so its headers go out when it opens."""

    _send_headers_immediately = False


class SSEWriter(EventWriter):
    """Numbers and writes events to a prepared-on-demand aiohttp StreamResponse."""

    def __init__(self, request: web.Request, ping_interval: float, *, defer_headers: bool = False) -> None:
        super().__init__()
        self.request = request
        self.response = (_EventStream if defer_headers else web.StreamResponse)(status=200, headers=HEADERS)
        self.ping_interval = ping_interval
        self._last_write = 0.0
        self._pinger: asyncio.Task | None = None
        self.started = False

    async def open(self) -> None:
        """Send the headers and start the keep-alive pings."""
        await self.response.prepare(self.request)
        self.started = True
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()
        self._pinger = loop.create_task(self._ping(loop))

    async def write_encoded(self, event: dict, payload: str) -> None:
        await self.write_frame(frame_raw(event["type"], payload))

    async def write_batch(self, events: Sequence[dict], payloads: Sequence[str]) -> None:
        if events:
            await self.write_frame("".join([frame_text(e["type"], p)
                                            for e, p in zip(events, payloads, strict=True)]).encode())

    async def write_frame(self, data: bytes) -> None:
        self._last_write = asyncio.get_running_loop().time()
        await self.response.write(data)

    async def _ping(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                idle = loop.time() - self._last_write
                if idle >= self.ping_interval:
                    self._last_write = loop.time()
                    await self.response.write(PING)
                    idle = 0.0
                await asyncio.sleep(self.ping_interval - idle)

    async def close(self) -> None:
        """Stop pinging and end the body (ignoring a client that already left)."""
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self.started:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.response.write_eof()

    def stop_pings(self) -> None:
        """Synchronous variant for cancellation paths."""
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
