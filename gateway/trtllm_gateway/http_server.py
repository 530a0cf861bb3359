"""The HTTP server under the app: what aiohttp's defaults leave open to slow or hostile clients.

Protocol (HTTP/1.1 connection handling; every reply in the OpenAI error envelope):

* **Header timeout** (``--header-timeout-s``): a connection must deliver a complete request
  line and headers within this long of opening, or of the end of its previous response
  (the keep-alive idle time counts too); else it is closed. It is aiohttp's keep-alive
  timer, which closes a connection still waiting for its next request when it fires.
* **Body timeout** (``--body-timeout-s``, :func:`body_middleware`): the whole body must
  arrive within this long of the headers; else 408 ``request_timeout`` and the connection
  closes. A ``Content-Length`` over ``--max-body-bytes`` is a 413 at once, before any of
  the body is read. A compressed body (``Content-Encoding`` zstd, gzip, deflate) is then
  decoded with the same limit on its decoded size (``body_encoding.py``; aiohttp's own
  decoding is off).
* **Expect: 100-continue** (RFC 9110 §10.1.1): aiohttp would send ``100 Continue`` before
  any middleware runs, so the client would upload a body the gateway then refuses. Every
  route's expect handler is :func:`defer_continue` instead (:func:`install_expect_handler`):
  it sends nothing, and :func:`body_middleware` sends ``100 Continue`` just before it reads
  the body, after auth and the ``Content-Length`` check. A request answered without it
  (401, 413...) gets ``Connection: close`` and the connection closes once the reply is
  written (``GatewayRequestHandler.finish_response``): its body was never asked for, so no
  later request may follow on that connection, and waiting for the body (aiohttp lingers
  up to 10 s to read what follows a reply) would be waiting for nothing. Other expectations
  are ignored (a server MAY answer 417; ignoring them reads the body as usual). HTTP/1.0
  clients never get ``100 Continue``.
* **Connection cap** (``--max-connections``, at most the open-file limit less
  ``FD_RESERVE``): a connection past it gets a 503 ``server_busy`` and is closed at once,
  so the process never runs out of file descriptors for its own sockets and files.
* **Accept errors** (EMFILE and friends): asyncio stops accepting for a second after each;
  its log line is rate-limited here to one per ``ACCEPT_LOG_INTERVAL_S`` with a count.
* **Parser errors** (a request line or header over 8,190 bytes, bad characters, a bad
  method): aiohttp answers them itself in plain text that echoes the client's bytes. Here
  they are a 400 in the envelope, with a fixed message per kind and nothing echoed, logged
  at debug level without a traceback.

:func:`make_runner` builds the runner with all of it; ``main.py`` and the tests use it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, http_exceptions, web
from aiohttp.http import HttpVersion11
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_urldispatcher import MatchInfoError

from . import body_encoding
from .errors import ApiError, error_response
from .limits import off_loop
from .settings import GatewaySettings

log = logging.getLogger("trtllm_gateway.http")

FD_RESERVE = 256  # descriptors kept for the service channels, the store, logs and refused sockets
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The request asked for 100 Continue (left to body_middleware), and whether it was sent.
EXPECTS_CONTINUE = web.RequestKey("expects_continue", bool)
CONTINUE_SENT = web.RequestKey("continue_sent", bool)
ACCEPT_LOG_INTERVAL_S = 10.0
_ACCEPT_ERROR = "socket.accept() out of system resource"

# Parser error class -> what the client is told (never the bytes it sent).
PARSER_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "The request line or a header is too long."),
    (http_exceptions.InvalidHeader, "A header has a name or value that HTTP does not allow."),
    (http_exceptions.BadHttpMethod, "The request method is not valid HTTP."),
    (http_exceptions.BadStatusLine, "The request line is not valid HTTP."),
    (http_exceptions.InvalidURLError, "The request URL is not valid."),
    (http_exceptions.PayloadEncodingError, "The request body's framing or encoding is not valid."),
)


def _envelope(status: int, type_: str, code: str, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _raw_response(status: str, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body


_BUSY = _raw_response("503 Service Unavailable", _envelope(
    503, "server_error", "server_busy", "The server has too many open connections; retry shortly."),
    "Retry-After: 1\r\n")


class _Refused(asyncio.Protocol):
    """A connection past the cap: one 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_BUSY)  # type: ignore[attr-defined]
        transport.close()


class GatewayRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with its own error replies in the envelope."""

    def log_exception(self, *args, **kwargs) -> None:
        """A client's broken body (bad framing or encoding), met while aiohttp drains what is
        left of it after the reply, is the client's fault: debug, without a traceback."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (RequestPayloadError, http_exceptions.HttpProcessingError)):
            log.debug("unreadable request body: %s", type(exc).__name__)
            return
        super().log_exception(*args, **kwargs)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        """A reply to a request whose ``100 Continue`` was never sent closes the connection."""
        unsent = request.get(EXPECTS_CONTINUE) and not request.get(CONTINUE_SENT) and request.body_exists
        if unsent:
            resp.force_close()  # before its headers: they say Connection: close
        result = await super().finish_response(request, resp, start_time)
        if unsent:
            self.force_close()  # once written: no lingering read of a body that is not coming
        return result

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; no error reply can follow")
        if isinstance(exc, http_exceptions.HttpProcessingError):
            log.debug("unparsable request: %s", type(exc).__name__)
            text = next((m for cls, m in PARSER_MESSAGES if isinstance(exc, cls)), "The request is not valid HTTP.")
            err = ApiError("invalid_request", text)
        elif status == 504:
            err = ApiError("timeout", "The request timed out.")
        else:
            log.error("unhandled error outside the error middleware", exc_info=exc)
            err = ApiError("server_error", "The server had an error while processing your request.")
        response = error_response(err)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """Makes :class:`GatewayRequestHandler` protocols, up to ``max_connections`` at once.
    ``on_close`` (a worker's, ``workers.py``) is called once for every connection that ends."""

    def __init__(self, *args, max_connections: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.on_close: Callable[[], None] | None = None

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if len(self._connections) >= self.max_connections:
            if self.on_close is not None:
                self._loop.call_soon(self.on_close)  # _Refused closes it at once
            return _Refused()
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if self.on_close is not None:
            self.on_close()


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`GatewayServer`; rate-limits accept errors."""

    def __init__(self, app: web.Application, settings: GatewaySettings, **overrides) -> None:
        # auto_decompress off: bodies are decoded under the size limit by body_middleware
        # (body_encoding.py), never by aiohttp's lingering close
        options = {"handler_cancellation": True, "access_log": None, "keepalive_timeout": settings.header_timeout_s,
                   "shutdown_timeout": settings.shutdown_timeout_s, "auto_decompress": False, **overrides}
        super().__init__(app, **options)
        self.max_connections = connection_cap(settings.max_connections)
        self._accept_log = _AcceptErrorLog()

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the app's startup
        self._accept_log.install(asyncio.get_running_loop())
        return GatewayServer(base.request_handler, request_factory=base.request_factory,
                             handler_cancellation=base.handler_cancellation, loop=base._loop,
                             max_connections=self.max_connections, **base._kwargs)

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            self._accept_log.uninstall()


class _AcceptErrorLog:
    """A loop exception handler that logs asyncio's accept errors at most once an interval.

    asyncio (3.11) reports every failed accept() of a readable listening socket, and at the
    descriptor limit it retries hundreds of times a second; each report used to be a log
    line with a traceback. Other reports go to the handler that was there before."""

    def __init__(self) -> None:
        self.suppressed = 0
        self.last = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_ERROR:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_LOG_INTERVAL_S:
            self.suppressed += 1
            return
        log.error("cannot accept connections: %s (%d more since the last report); accepting pauses a second "
                  "after each", context.get("exception"), self.suppressed)
        self.last, self.suppressed = now, 0


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to fit the open-file limit (raised to its hard limit first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    room = max(soft - FD_RESERVE, 1) if soft != resource.RLIM_INFINITY else wanted
    if wanted > room:
        log.warning("--max-connections %d lowered to %d to fit the open-file limit of %d", wanted, room, soft)
    return min(wanted, room)


async def defer_continue(request: web.Request) -> None:
    """Every route's expect handler: sends nothing; :func:`body_middleware` answers a
    ``100-continue`` expectation once auth and the size limit have let the request through."""
    if request.version >= HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        request[EXPECTS_CONTINUE] = True


def install_expect_handler(router: web.UrlDispatcher) -> None:
    """:func:`defer_continue` on every route registered so far (call it last), and on the
    route aiohttp makes up for a request that matches none (404, 405), which would otherwise
    send ``100 Continue`` before the refusal. aiohttp takes an expect handler only as an
    argument of each ``add_route``, so it is set afterwards (its private ``_expect_handler``)."""
    for route in router.routes():
        route._expect_handler = defer_continue
    resolve = router.resolve

    async def resolve_deferring(request: web.Request) -> Any:
        match = await resolve(request)
        if isinstance(match, MatchInfoError):
            match.route._expect_handler = defer_continue
        return match
    router.resolve = resolve_deferring  # type: ignore[method-assign]


def body_middleware(settings: GatewaySettings):
    """Bounds the body before any handler reads it: 413 from ``Content-Length`` at once (also
    before ``100 Continue``), then the whole body within ``--body-timeout-s`` (408 and the
    connection closes)."""
    limit, timeout = settings.max_body_bytes, settings.body_timeout_s

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if not request.body_exists or isinstance(request.match_info, MatchInfoError):
            return await handler(request)  # no body, or no route (404/405): refused unread
        if request.content_length is not None and request.content_length > limit:
            raise ApiError("body_too_large", f"The request body is too large: {request.content_length} bytes "
                           f"declared, at most {limit} are accepted.")
        if request.get(EXPECTS_CONTINUE):
            await request.writer.write(CONTINUE)
            request.writer.output_size = 0  # as aiohttp does: the response itself has not started
            request[CONTINUE_SENT] = True
        if request.content.is_eof():  # the body came with the headers: no timer (wait_for's task and
            raw = await request.read()  # handle are a loop turn per request); aiohttp keeps it for read()
        else:
            try:
                raw = await asyncio.wait_for(request.read(), timeout)
            except TimeoutError:
                response = error_response(ApiError("request_timeout", f"The request body did not arrive within "
                                                   f"{timeout:g} seconds."))
                response.force_close()
                return response
        header = request.headers.get(hdrs.CONTENT_ENCODING)
        if body_encoding.codings(header):
            decoded = await off_loop(raw, lambda: body_encoding.decode(raw, header, limit))
            request._read_bytes = decoded  # what every later request.read() returns (aiohttp's cache)
        return await handler(request)
    return middleware


def make_runner(app: web.Application, settings: GatewaySettings, **overrides) -> GatewayRunner:
    """The runner of a gateway app (``overrides``: ``web.AppRunner`` options, e.g. a shorter
    ``shutdown_timeout`` in tests)."""
    return GatewayRunner(app, settings, **overrides)
