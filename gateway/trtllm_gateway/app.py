"""The aiohttp Application: routes, middlewares and the lifecycle of shared resources.

Middlewares, outermost first: metrics (every request, by matched route pattern; 499 when
the client left; a WebSocket's status is the one ``websocket.py`` decided), errors
(the one envelope, ``errors.py``), auth (``auth.py``), body (size and read timeout,
``http_server.py``), idempotency (``idempotency.py``). Startup opens the store and the
service channel(s); cleanup waits for background saves (responses of clients that went
away mid-stream), then closes both. Handlers find everything on ``app[GATEWAY]``.
The server runs through ``http_server.make_runner`` (timeouts, connection cap, parser
errors in the envelope) with ``handler_cancellation=True``, so a client that disconnects
cancels its handler, which cancels the gRPC call and with it the engine request.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from . import idempotency, websocket
from .auth import Authenticator
from .context import ARRIVED, GATEWAY, Gateway
from .errors import error_middleware
from .http_server import body_middleware, install_expect_handler
from .metrics import GatewayMetrics
from .routes import background as background_routes
from .routes import compact, conversations, health, models, responses
from .service_client import ServiceClient
from .settings import GatewaySettings
from .store import ResponseStore, open_store

log = logging.getLogger("trtllm_gateway")




def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _client_left(request: web.Request, response: web.StreamResponse) -> bool:
    """A streamed response whose client is gone when its handler returns: the handler saw a
    failed write (before aiohttp's cancellation arrived) and wound down quietly."""
    transport = request.transport
    return response.prepared and (transport is None or transport.is_closing())


def _metrics_middleware(metrics: GatewayMetrics):
    @web.middleware
    async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
        request[ARRIVED] = started = time.perf_counter()
        status = 499  # nginx's "client closed request": the handler was cancelled
        try:
            response = await handler(request)
            status = 499 if _client_left(request, response) else response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except ConnectionError:
            status = 499
            raise
        except Exception:
            status = 500
            raise
        finally:
            status = request.get(websocket.STATUS, status)  # a socket's own verdict (websocket.py)
            route, method = _route_label(request), request.method
            metrics.http_requests.labels(route, method, str(status)).inc()
            metrics.http_duration.labels(route, method).observe(time.perf_counter() - started)
    return metrics_middleware


async def _startup(app: web.Application) -> None:
    gw = app[GATEWAY]
    await gw.store.open()
    gw.service = ServiceClient(gw.settings, gw.metrics)
    await gw.service.start()
    if gw.settings.store_retention_s > 0:
        gw.purger = asyncio.create_task(_purge_loop(gw))


async def _purge_loop(gw: Gateway) -> None:
    interval = min(max(gw.settings.store_retention_s / 10, 1.0), 3600.0)
    while True:
        with contextlib.suppress(Exception):
            with gw.metrics.store_op("purge"):
                await gw.store.purge_older_than(int(time.time() - gw.settings.store_retention_s))
        with contextlib.suppress(Exception):  # idle conversations and idempotency keys
            with gw.metrics.store_op("purge_conversations"):
                await gw.store.purge_conversations_older_than(int(time.time() - gw.settings.store_retention_s))
        await asyncio.sleep(interval)


async def _cleanup(app: web.Application) -> None:
    gw = app[GATEWAY]
    if gw.purger is not None:
        gw.purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gw.purger
    if gw.background:
        await asyncio.wait(list(gw.background), timeout=gw.settings.shutdown_timeout_s)
    if gw.service is not None:
        await gw.service.close()
    await gw.store.close()


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """No `Server: Python/3.11 aiohttp/x.y` banner: versions are a gift to scanners. aiohttp
    only fills the header when it is unset, after this hook."""
    response.headers["Server"] = "trtllm-responses"


def build_app(settings: GatewaySettings, store: ResponseStore | None = None) -> web.Application:
    """The gateway app. ``store`` overrides ``settings.store_url`` (tests pass their own)."""
    metrics = GatewayMetrics()
    auth = Authenticator(settings.all_api_keys(), settings.metrics_api_key)
    gw = Gateway(settings, metrics, auth, store if store is not None else open_store(settings.store_url))
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[_metrics_middleware(metrics), error_middleware, auth.middleware(),
                                       body_middleware(settings), idempotency.middleware])
    app[GATEWAY] = gw
    responses.add_routes(app.router)
    compact.add_routes(app.router)
    websocket.add_routes(app.router)
    conversations.add_routes(app.router)
    models.add_routes(app.router)
    health.add_routes(app.router)
    app.on_response_prepare.append(_server_header)
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    background_routes.setup(app)  # after _startup: its runner needs the open store
    install_expect_handler(app.router)  # last: every route's (http_server.py)
    return app
