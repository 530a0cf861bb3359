"""``POST /v1/responses/compact`` (``compaction.py``): ``object: "response.compaction"``."""
from __future__ import annotations

from aiohttp import web

from .. import compaction
from ..context import GATEWAY, TENANT
from ..request import read_json
from ..sse import dumps


async def compact(request: web.Request) -> web.Response:
    body = await read_json(request)
    result = await compaction.compact(request.app[GATEWAY], body, request[TENANT])
    return web.Response(text=dumps(result), content_type="application/json")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/responses/compact", compact)
