"""gRPC message-size limits over real HTTP (issue 14, defect 9).

A request whose GenerateRequest is over a gRPC message limit, the gateway's own (sending) or
the service's (receiving), is the client's fault and permanent: a 400 naming the size, never
the 429 "retry shortly" of a full queue (SDKs retry 429 forever). Non-ASCII text in tool
``parameters`` and ``text.format`` schemas travels as UTF-8, not as ``\\uXXXX`` escapes that
triple its size. The stack is real (scripted engine, service, gateway, SQLite).
"""
from __future__ import annotations

import aiohttp
import pytest_asyncio

from tests.fixtures.gateway import start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

LIMIT = 64 * 1024


async def _stack(tokenizer, tmp_path_factory, name: str, service: dict, gateway: dict):
    engine = ScriptedEngine(tokenizer, "ok", model_id="scripted-size", context=1 << 20)
    server = await serve_in_process(engine, **service)
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp(name), **gateway)
    return handle, runner, server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_gateway(tokenizer, tmp_path_factory):
    """The gateway's own gRPC limit is small; the service's is the default."""
    handle, runner, server = await _stack(tokenizer, tmp_path_factory, "size-gw", {}, {"max_message_bytes": LIMIT})
    yield handle
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_service(tokenizer, tmp_path_factory):
    """The service's gRPC limit is small; the gateway's is the default."""
    handle, runner, server = await _stack(tokenizer, tmp_path_factory, "size-svc", {"max_message_bytes": LIMIT}, {})
    yield handle
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


async def _post(handle, body: dict) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(handle.base_url + "/responses", json=body) as r:
            return r.status, await r.json(), dict(r.headers)


def _assert_too_large(status: int, body: dict, headers: dict) -> None:
    assert status == 400, body
    err = body["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large", err
    assert "Retry-After" not in headers
    assert str(LIMIT) in err["message"] and "bytes" in err["message"], err["message"]


async def test_request_over_the_gateways_grpc_limit_is_400_naming_the_size(small_gateway):
    status, body, headers = await _post(small_gateway, {"model": "default", "input": "x" * (2 * LIMIT)})
    _assert_too_large(status, body, headers)


async def test_request_over_the_services_grpc_limit_is_400_naming_the_size(small_service):
    status, body, headers = await _post(small_service, {"model": "default", "input": "x" * (2 * LIMIT)})
    _assert_too_large(status, body, headers)


async def test_non_ascii_tool_parameters_travel_as_utf8(small_gateway):
    """6,000 emoji are 24 KB as UTF-8 but 72 KB as \\ud83d\\ude00 escapes, over the 64 KiB limit."""
    emoji = "\U0001F600" * 6000
    schema = {"type": "object", "description": emoji, "properties": {"a": {"type": "string"}}}
    body = {"model": "default", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": schema}],
            "max_output_tokens": 16}
    status, reply, _ = await _post(small_gateway, body)
    assert status == 200, reply
    assert reply["tools"][0]["parameters"]["description"] == emoji
