"""WebSocket mode of ``/v1/responses``: many streamed responses over one connection.

Protocol (OpenAI Responses WebSocket; ``openai.types.responses.responses_client_event`` /
``responses_server_event``): ``GET /v1/responses`` with ``Upgrade: websocket`` (auth as for
HTTP). The client sends JSON text (or UTF-8 binary) frames ``{"type": "response.create",
...the POST /v1/responses body...}``; ``stream`` is implicit, ``background`` is refused,
``stream_id`` (optional) is echoed on every event of that response. The server answers
with one JSON text frame per event: the same events, in the same order, with the same
``sequence_number`` rules (from 0 per response) as SSE, written by ``generation.stream``
(the one driver) through a :class:`WebSocketEventWriter` (the shared ``sse.EventWriter``
numbering).

* Responses run one after another in arrival order; at most :data:`MAX_PENDING` creates
  may wait behind the running one (more closes the connection with 1008).
* A request that fails before its stream starts (validation, unknown model, full queue,
  ``previous_response_not_found``...) is one ``{"type": "error", "status", "error":
  {"type", "code", "message", "param"}}`` event, the HTTP error's body; a bad frame (not
  JSON, not an object, unknown ``type``) too. The connection stays usable.
* ``store: false`` responses that end ``completed``/``incomplete`` are remembered by the
  connection (the last :data:`MAX_REMEMBERED`, as their full item history), so
  ``previous_response_id`` continues them without the store: stateless multi-turn over
  one socket. Others fall back to the store. A continuation that fails (error event or
  ``failed``) evicts the response it continued. A remembered history keeps only what the
  model would read of it: what a compaction item stands for (``compaction_item.supersede``)
  is dropped, so a socket that compacts holds a compact history, not every turn.
* A stored response (``store`` true, the default) is event-logged as an SSE stream is, so
  ``GET /v1/responses/{id}?stream=true`` replays or follows it (without ``stream_id``).
* The client closing (or dropping) the connection cancels the running response: the
  Generate call is cancelled, which aborts the engine request; a stored response is saved
  ``cancelled``.
* The request metrics count a socket as :data:`STATUS`, decided when it ends: 101 (what
  was sent) when it ended normally, 499 when the client left: it dropped the connection
  (or its heartbeat, or broke the protocol), closed with a code other than 1000/1001, or
  closed while a response was unanswered (its terminal or error event not yet sent) or
  waiting. A close by the server (1008, shutdown's 1001) is not the client leaving.
Heartbeat pings every ``--ping-interval-s`` replace SSE's ``: ping`` comments.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from . import compaction_item, generation, hosted_tools
from .context import GATEWAY, TENANT, Gateway
from .errors import ApiError, to_api_error
from .events import TERMINAL_EVENTS
from .request import CreateRequest, parse_create, parse_json_object
from .sse import EventWriter, dumps

MAX_PENDING = 16
MAX_REMEMBERED = 16
CREATE = "response.create"
REMEMBERED_STATUSES = ("completed", "incomplete")
NORMAL_CLOSES = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
#: The status the request metrics count for a socket (app.py), set when it ends.
STATUS = web.RequestKey("websocket_status", int)


class WebSocketEventWriter(EventWriter):
    """One response's events as JSON text frames (numbered by EventWriter)."""

    def __init__(self, ws: web.WebSocketResponse, stream_id: str | None, answered: Callable[[], None]) -> None:
        super().__init__()
        self.ws = self.response = ws
        self.stream_id = stream_id
        self.answered = answered

    async def open(self) -> None:  # the socket is already open; heartbeats replace pings
        pass

    async def close(self) -> None:  # the socket outlives the response
        pass

    def stop_pings(self) -> None:
        pass

    async def write_encoded(self, event: dict, payload: str) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        if self.stream_id is not None:  # on the frame only: the event log keeps the plain event
            # as dumps(dict(event, stream_id=...)) gives it (the key last), without re-encoding
            payload = payload[:-1] + ',"stream_id":' + dumps(self.stream_id) + "}"
        if event["type"] in TERMINAL_EVENTS:  # before the send: a client that read it may close at once
            self.answered()
        await self.ws.send_str(payload)


def _create_body(raw: str | bytes) -> tuple[dict, str | None]:
    """The create body of a client frame and its stream_id; ApiError for a bad frame."""
    body = parse_json_object(raw.encode() if isinstance(raw, str) else raw)
    kind = body.pop("type", None)
    if kind != CREATE:
        raise ApiError("invalid_request", f"Unsupported event type {kind!r}; this server accepts '{CREATE}'.",
                       param="type", code="unsupported_event_type")
    stream_id = body.pop("stream_id", None)
    if stream_id is not None and not isinstance(stream_id, str):
        raise ApiError("invalid_request", "Invalid 'stream_id': expected a string.", param="stream_id")
    if body.get("background"):
        raise ApiError("unsupported", "Background responses are not available over WebSocket; "
                       "use POST /v1/responses.", param="background")
    if body.pop("generate", True) is not True:
        raise ApiError("unsupported", "'generate: false' is not supported by this server.", param="generate")
    return body, stream_id


class Connection:
    """One socket's state: its tenant, its waiting creates, whether one is being answered,
    and the store:false turns it remembers."""

    def __init__(self, gw: Gateway, ws: web.WebSocketResponse, tenant: str, app: web.Application) -> None:
        self.gw, self.ws, self.tenant, self.app = gw, ws, tenant, app
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.answering = False  # a create taken whose terminal or error event is not sent yet
        self.remembered: OrderedDict[str, list[dict]] = OrderedDict()

    async def read(self) -> bool:
        """Queues the client's creates until the socket ends; whether the client left (see STATUS)."""
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.CLOSE:  # the client's close frame
                return msg.data not in NORMAL_CLOSES or self.answering or not self.queue.empty()
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):  # dropped, heartbeat lost, protocol broken
                return True
            if msg.type == WSMsgType.CLOSING:  # the server is closing it (shutdown)
                return False
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if self.queue.qsize() >= MAX_PENDING:
                await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many pending creates")
                return False
            self.queue.put_nowait(msg.data)

    async def serve(self) -> None:
        while True:
            raw = await self.queue.get()
            self.answering = True
            try:
                await self.handle(raw)
            finally:
                self.answering = False

    def answered(self) -> None:
        self.answering = False

    async def handle(self, raw: str | bytes) -> None:
        body: dict = {}
        stream_id: str | None = None
        try:
            body, stream_id = _create_body(raw)
            req = parse_create(body, limits=self.gw.settings)
            hosted_tools.record(self.gw.metrics, req.tools)
            await self.respond(req, stream_id)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            pass  # the client left; the reader ends the connection
        except Exception as exc:  # noqa: BLE001 - the error table decides, as for HTTP
            self.evict(body.get("previous_response_id"))  # a failed continuation forgets its base
            await self.error(to_api_error(exc), stream_id)

    async def respond(self, req: CreateRequest, stream_id: str | None) -> None:
        history = self.recall(req)
        if history is None:
            history = await generation.load_history(self.gw, req, self.tenant)
        g = await generation.prepare(self.gw, req, self.tenant, time.perf_counter(), history=history)
        g.on_finish.append(self.remember_hook(req, history))
        await generation.stream(self.gw, self.app, g, WebSocketEventWriter(self.ws, stream_id, self.answered))

    def recall(self, req: CreateRequest) -> list[dict] | None:
        prev = req.previous_response_id
        if not prev or req.conversation or prev not in self.remembered:
            return None
        self.remembered.move_to_end(prev)
        return list(self.remembered[prev])

    def evict(self, response_id) -> None:
        if isinstance(response_id, str):
            self.remembered.pop(response_id, None)

    def remember_hook(self, req: CreateRequest, history: list[dict]):
        async def remember(resp: dict) -> None:
            if resp["status"] == "failed":
                self.evict(req.previous_response_id)
            elif not req.store and resp["status"] in REMEMBERED_STATUSES:
                turn = history + req.input.items + resp["output"]
                self.remembered[resp["id"]] = compaction_item.supersede(turn)
                while len(self.remembered) > MAX_REMEMBERED:
                    self.remembered.popitem(last=False)
        return remember

    async def error(self, err: ApiError, stream_id: str | None) -> None:
        event = {"type": "error", "status": err.status, "error": err.body()["error"]}
        if stream_id is not None:
            event["stream_id"] = stream_id
        self.answered()  # before the send, as for a terminal event
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not self.ws.closed:
                await self.ws.send_str(dumps(event))


#: The socket's Connection, on its WebSocketResponse: what it remembers can be inspected
#: (gw.sockets holds the responses), e.g. by the tests of compaction's pruning.
CONNECTION = web.ResponseKey("connection", Connection)


async def handle(request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/responses``: upgrade, then serve creates until the client goes away."""
    gw = request.app[GATEWAY]
    ws = web.WebSocketResponse(heartbeat=gw.settings.ping_interval_s, max_msg_size=gw.settings.max_body_bytes)
    if not ws.can_prepare(request).ok:
        raise ApiError("method_not_allowed", "GET /v1/responses is the WebSocket transport: send an Upgrade "
                       "request (or POST /v1/responses to create a response).")
    await ws.prepare(request)
    ws[CONNECTION] = conn = Connection(gw, ws, request[TENANT], request.app)
    worker = asyncio.ensure_future(conn.serve())
    gw.sockets.add(ws)
    try:
        # no await between the end and this: the client's close may cancel the handler next
        request[STATUS] = 499 if await conn.read() else 101
    finally:
        gw.sockets.discard(ws)
        worker.cancel()  # a running response is cancelled: its Generate call and engine request abort
        await asyncio.wait({worker})
    return ws


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/responses", handle, allow_head=False)
