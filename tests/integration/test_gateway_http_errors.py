"""Every error case of errors.py over real HTTP: status, type, param, code, Retry-After."""
from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures.gateway import raw_stream, start_gateway
from tests.fixtures.service import free_port
from trtllm_gateway.context import GATEWAY

SHORT = {"temperature": 0, "max_output_tokens": 16}


async def _post(url: str, *, json_body=None, data: bytes | None = None, method: str = "POST"):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=json_body, data=data,
                                   headers={} if json_body is not None else {"Content-Type": "application/json"}) as r:
            return r.status, await r.json(), r.headers


def _assert_error(status, body, expected_status, type_, param=None, code=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    err = body["error"]
    assert (err["type"], err["param"], err["code"]) == (type_, param, code), err
    assert err["message"] and "Traceback" not in err["message"]


CASES = [
    # (body, status, type, param, code)
    (b"{not json", 400, "invalid_request_error", None, None),
    (b"[1, 2]", 400, "invalid_request_error", None, None),
    (b'{"model": "default", "input": "hi \\ud800"}', 400, "invalid_request_error", None, None),
    (b'{"model": "default", "input": "x", "previous_response_id": "resp_\\udfff"}', 400, "invalid_request_error",
     None, None),
    ({"model": "default"}, 400, "invalid_request_error", "input", None),
    ({"model": "default", "input": "x", "temperature": "hot"}, 400, "invalid_request_error", "temperature", None),
    ({"model": "default", "input": "x", "max_output_tokens": 4},
     400, "invalid_request_error", "max_output_tokens", None),
    ({"model": "default", "input": "x", "tools": [{"type": "web_searching"}]}, 400, "invalid_request_error",
     "tools[0].type", "unsupported_parameter"),
    ({"model": "default", "input": "x", "whatever": 1}, 400, "invalid_request_error", "whatever", "unknown_parameter"),
    ({"model": "default", "input": "x", "metadata": {"k": "v" * 513}}, 400, "invalid_request_error", "metadata", None),
    ({"model": "no-such-model", "input": "x"}, 404, "invalid_request_error", "model", "model_not_found"),
    ({"model": "default", "input": "x", "previous_response_id": "resp_missing"}, 404, "invalid_request_error",
     "previous_response_id", "previous_response_not_found"),
    ({"model": "default", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]},
     400, "invalid_request_error", "input[0].content[1]", None),
    # a stored turn's item ids are cursors: two items with one id were a 503 after generating
    ({"model": "default", "store": True, "input": [{"role": "user", "content": "a", "id": "msg_d"},
                                                   {"role": "user", "content": "b", "id": "msg_d"}]},
     400, "invalid_request_error", "input[1]", None),
]


@pytest.mark.parametrize("body,status,type_,param,code", CASES)
async def test_create_errors(gateway, body, status, type_, param, code):
    url = gateway.base_url + "/responses"
    if isinstance(body, bytes):
        got = await _post(url, data=body)
    else:
        got = await _post(url, json_body=body)
    _assert_error(got[0], got[1], status, type_, param, code)


async def test_streaming_request_errors_are_http_errors_too(gateway):
    status, events, body = await raw_stream(gateway, {"model": "no-such-model", "input": "x"})
    assert status == 404 and events == [] and body["error"]["code"] == "model_not_found"


async def test_unknown_response_route_and_method(gateway):
    async with aiohttp.ClientSession() as session:
        for method, path, status, code in (
            ("GET", "/responses/resp_unknown", 404, None),
            ("DELETE", "/responses/resp_unknown", 404, None),
            ("GET", "/nope", 404, None),
            ("PUT", "/responses", 405, "method_not_allowed"),
        ):
            async with session.request(method, gateway.base_url + path) as r:
                _assert_error(r.status, await r.json(), status, "invalid_request_error",
                              "response_id" if "resp_unknown" in path else None, code)


async def test_oversized_body_is_413(service, tmp_path):
    handle, runner = await start_gateway(service.address, tmp_path, max_body_bytes=1024)
    try:
        status, body, _ = await _post(handle.base_url + "/responses",
                                      json_body={"model": "default", "input": "x" * 4096})
        _assert_error(status, body, 413, "invalid_request_error", None, "request_too_large")
    finally:
        await handle.client.close()
        await runner.cleanup()


async def test_context_too_long_is_400_context_length_exceeded(gateway):
    info = await gateway.client.models.list()
    c100 = await gateway.client.responses.input_tokens.count(model="default", input="hello " * 100)
    c200 = await gateway.client.responses.input_tokens.count(model="default", input="hello " * 200)
    per_word = (c200.input_tokens - c100.input_tokens) / 100
    context = await _context_length(gateway)
    words = int(context / per_word) + 200
    status, body, _ = await _post(gateway.base_url + "/responses",
                                  json_body={"model": info.data[0].id, "input": "hello " * words})
    _assert_error(status, body, 400, "invalid_request_error", "input", "context_length_exceeded")


async def _context_length(gateway) -> int:
    return (await gateway.app[GATEWAY].service.model_info()).max_context_length


async def test_service_down_is_503_and_not_ready(tmp_path):
    handle, runner = await start_gateway(f"127.0.0.1:{free_port()}", tmp_path, rpc_timeout_s=2)
    try:
        status, body, _ = await _post(handle.base_url + "/responses", json_body={"model": "default", "input": "x"})
        _assert_error(status, body, 503, "server_error", None, "service_unavailable")
        async with aiohttp.ClientSession() as session:
            async with session.get(handle.root + "/readyz") as r:
                assert r.status == 503
            async with session.get(handle.root + "/healthz") as r:
                assert r.status == 200  # alive, just not ready
    finally:
        await handle.client.close()
        await runner.cleanup()


HOSTILE_BODIES = [
    # (raw body, param) -- each got a 500 before (issue: bad input never gets a 500)
    (b'{"model": "default", "input": "x", "n": ' + b"9" * 5000 + b"}", None),  # int over 4,300 digits
    (b'{"model": "default", "input": ' + b"[" * 1000 + b"]" * 1000 + b"}", None),  # 1,000 deep
    (b'{"model": "default", "input": [' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"]}", None),  # past MAX_DEPTH
    (b'{"model": "default", "input": "\xed\xa0\x80"}', None),  # a lone surrogate as raw bytes
    (b'{"model": "default", "input": "x", "temperature": 1' + b"0" * 400 + b"}", "temperature"),  # no float
    (b'{"model": "default", "input": "x", "max_output_tokens": 4294967296}', "max_output_tokens"),
    (b'{"model": "default", "input": "x", "max_tool_calls": 4294967296}', "max_tool_calls"),
    (b'{"model": "default", "input": "x", "previous_response_id": ""}', "previous_response_id"),
    (b'{"model": "default", "input": [{"type": {}}]}', "input[0].type"),  # a type that is no string
    (b'{"model": "default", "input": [{"role": "user", "content": [{"type": []}]}]}', "input[0].content[0].type"),
    (b'{"model": "default", "input": "x", "tool_choice": {"type": []}}', "tool_choice.type"),
    (b'{"model": "default", "input": "x", "text": {"format": {"type": {}}}}', "text.format.type"),
    (b'{"model": "default", "input": [{"type": "function_call_output", "call_id": "c", "output": '
     b'[{"type": "input_text", "text": 5}]}]}', "input[0].output"),
]


@pytest.mark.parametrize("raw, param", HOSTILE_BODIES)
@pytest.mark.parametrize("route", ["/responses", "/responses/input_tokens"])
async def test_hostile_bodies_get_a_400_in_the_envelope(gateway, raw, param, route):
    status, body, _ = await _post(gateway.base_url + route, data=raw)
    code = body.get("error", {}).get("code")
    assert code in (None, "unsupported_parameter"), body
    _assert_error(status, body, 400, "invalid_request_error", param, code)


async def test_hostile_bodies_with_an_idempotency_key_get_a_400_too(gateway):
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.base_url + "/responses", data=b'{"a": ' * 1000 + b"1" + b"}" * 1000,
                                headers={"Content-Type": "application/json", "Idempotency-Key": "k-deep"}) as r:
            assert r.status == 400, await r.text()


async def test_no_server_banner_with_versions(gateway):
    _, _, headers = await _post(gateway.base_url + "/responses", data=b"{}")
    assert headers["Server"] == "trtllm-responses"
