"""``POST /v1/responses/compact`` (``compaction.py``): ``object: "response.compaction"``."""
from __future__ import annotations

from aiohttp import web

from .. import compaction
from ..context import GATEWAY, TENANT
from ..request import parse_json_object
from ..sse import dumps


async def compact(request: web.Request) -> web.Response:
    body = parse_json_object(await request.read())
    result = await compaction.compact(request.app[GATEWAY], body, request[TENANT])
    return web.Response(text=dumps(result), content_type="application/json")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/responses/compact", compact)
