"""``GET /v1/models`` and ``GET /v1/models/{model}`` (OpenAI list/model objects).

The served model id comes from the service's GetModelInfo; ``default`` is an alias of it.
"""
from __future__ import annotations

from aiohttp import web

from trtllm_responses.inference.v1 import inference_pb2 as pb

from ..context import GATEWAY
from ..generation import resolve_model

OWNER = "trtllm-responses"


def _model(info: pb.ModelInfo) -> dict:
    return {"id": info.model_id, "object": "model", "created": int(info.created), "owned_by": OWNER}


async def list_models(request: web.Request) -> web.Response:
    info = await request.app[GATEWAY].client.model_info()
    return web.json_response({"object": "list", "data": [_model(info)]})


async def get_model(request: web.Request) -> web.Response:
    info = await request.app[GATEWAY].client.model_info()
    resolve_model(request.match_info["model"], info)
    return web.json_response(_model(info))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/models", list_models)
    router.add_get("/v1/models/{model}", get_model)
