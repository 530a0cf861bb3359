"""The error table and its middleware: status, type, param, code for every case."""
from __future__ import annotations

import json

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trtllm_gateway.errors import ApiError, error_middleware, to_api_error
from trtllm_gateway.store import HistoryTooDeep, InvalidPageRequest, StoreCorrupt


def _rpc_error(code: grpc.StatusCode, details: str = "detail", **trailers: str) -> grpc.aio.AioRpcError:
    md = grpc.aio.Metadata(*[(k, v) for k, v in trailers.items()])
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), md, details=details)


GRPC_CASES = [
    # (status code, trailers, http status, type, code, param)
    (grpc.StatusCode.INVALID_ARGUMENT, {"x-error-param": "temperature"},
     400, "invalid_request_error", None, "temperature"),
    (grpc.StatusCode.INVALID_ARGUMENT, {"x-error-code": "context_length_exceeded", "x-error-param": "input"},
     400, "invalid_request_error", "context_length_exceeded", "input"),
    (grpc.StatusCode.INVALID_ARGUMENT, {"x-error-code": "context_length_exceeded", "x-error-param": "max_tokens"},
     400, "invalid_request_error", "context_length_exceeded", "max_output_tokens"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, {}, 429, "rate_limit_error", "rate_limit_exceeded", None),
    (grpc.StatusCode.UNAVAILABLE, {}, 503, "server_error", "service_unavailable", None),
    (grpc.StatusCode.DEADLINE_EXCEEDED, {}, 504, "server_error", "timeout", None),
    (grpc.StatusCode.INTERNAL, {}, 500, "server_error", "server_error", None),
    (grpc.StatusCode.UNKNOWN, {}, 500, "server_error", "server_error", None),
]


@pytest.mark.parametrize("code,trailers,status,type_,err_code,param", GRPC_CASES, ids=[c[0].name for c in GRPC_CASES])
def test_grpc_status_table(code, trailers, status, type_, err_code, param):
    err = to_api_error(_rpc_error(code, "service said no", **trailers))
    assert (err.status, err.kind.type, err.code, err.param) == (status, type_, err_code, param)


def test_rate_limit_carries_retry_after():
    err = to_api_error(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert int(err.headers["Retry-After"]) >= 1


def test_invalid_argument_keeps_the_service_message():
    err = to_api_error(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "prompt is 9000 tokens, context is 8192"))
    assert "9000" in err.message


def test_internal_errors_do_not_leak_service_details():
    err = to_api_error(_rpc_error(grpc.StatusCode.INTERNAL, "Traceback (most recent call last): secret"))
    assert "Traceback" not in err.message and "secret" not in err.message


@pytest.mark.parametrize("exc,status,param", [
    (json.JSONDecodeError("bad", "{", 0), 400, None),
    (HistoryTooDeep("too deep"), 400, "previous_response_id"),
    (InvalidPageRequest("limit must be in 1..100", "limit"), 400, "limit"),
    (StoreCorrupt("row 3"), 500, None),
    (KeyError("boom"), 500, None),
])
def test_exception_table(exc, status, param):
    err = to_api_error(exc)
    assert err.status == status and err.param == param
    if status == 500:
        assert err.kind.type == "server_error" and "boom" not in err.message and "row 3" not in err.message


async def _client(handlers: dict) -> TestClient:
    app = web.Application(middlewares=[error_middleware], client_max_size=64)
    for path, handler in handlers.items():
        app.router.add_post(path, handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _raise_api(request):
    raise ApiError("model_not_found", "The model 'x' does not exist.", param="model")


async def _raise_unknown(request):
    raise RuntimeError("internal detail that must not leak")


async def _read_body(request):
    await request.read()
    return web.json_response({})


async def test_middleware_envelopes_every_failure():
    client = await _client({"/api": _raise_api, "/boom": _raise_unknown, "/body": _read_body})
    try:
        cases = [
            (await client.post("/api"), 404, "invalid_request_error", "model_not_found", "model"),
            (await client.post("/boom"), 500, "server_error", "server_error", None),
            (await client.get("/nowhere"), 404, "invalid_request_error", None, None),
            (await client.get("/api"), 405, "invalid_request_error", "method_not_allowed", None),
            (await client.post("/body", data=b"x" * 1000), 413, "invalid_request_error", "request_too_large", None),
        ]
        for resp, status, type_, code, param in cases:
            body = await resp.json()
            assert resp.status == status, (resp.url, body)
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (type_, code, param)
            assert "Traceback" not in body["error"]["message"] and "internal detail" not in body["error"]["message"]
    finally:
        await client.close()
