"""Probes and metrics: ``/healthz`` (the process is up), ``/readyz`` (the service reports
SERVING on the standard gRPC health check), ``/metrics`` (Prometheus text format)."""
from __future__ import annotations

from aiohttp import web

from ..context import GATEWAY


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = await request.app[GATEWAY].client.ready()
    return web.json_response({"status": "ready" if ready else "unavailable", "service": ready},
                             status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[GATEWAY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
