"""A table of hand-written hostile requests (issue 14's examples and their relatives).

Each goes over HTTP to the live gateway (and each create body also over the WebSocket
transport); ``Recorder.check`` holds every answer to the suite's rules: no 5xx, errors in
the envelope, no traceback in the logs. ``{resp}`` and ``{conv}`` in a path stand for a
stored, streamed response and a conversation made for the test.
"""
from __future__ import annotations

import gzip
import json

import aiohttp
import pytest
import requests

from tests.fuzz.live_stack import API_KEY, REQUEST_TIMEOUT_S, session

M = b'{"model": "default", '


def _deep(n: int, leaf: bytes = b"1") -> bytes:
    return b'{"a": ' * n + leaf + b"}" * n


def _schema(n: int) -> dict:
    node: dict = {"type": "string"}
    for _ in range(n):
        node = {"type": "object", "properties": {"a": node}}
    return node


def _tools(parameters) -> bytes:
    return M + b'"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": ' + \
        json.dumps(parameters, ensure_ascii=False).encode() + b"}]}"


CREATE_BODIES = {
    "type-object": M + b'"input": [{"type": {}}]}',
    "type-array": M + b'"input": [{"type": []}]}',
    "part-type-array": M + b'"input": [{"role": "user", "content": [{"type": []}]}]}',
    "tool-choice-type-array": M + b'"input": "hi", "tool_choice": {"type": []}}',
    "format-type-object": M + b'"input": "hi", "text": {"format": {"type": {}}}}',
    "output-part-text-int": M + b'"input": [{"type": "function_call_output", "call_id": "c", '
                                b'"output": [{"text": 5}]}]}',
    "max-output-2^32": M + b'"input": "hi", "max_output_tokens": 4294967296}',
    "max-output-2^63": M + b'"input": "hi", "max_output_tokens": 9223372036854775808}',
    "max-output-float": M + b'"input": "hi", "max_output_tokens": 1e308}',
    "max-tool-calls-2^32": M + b'"input": "hi", "max_tool_calls": 4294967296}',
    "int-5000-digits": M + b'"input": "hi", "metadata": {"k": ' + b"9" * 5000 + b"}}",
    "int-too-big-for-float": M + b'"input": "hi", "temperature": 1' + b"0" * 400 + b"}",
    "float-overflow": M + b'"input": "hi", "top_p": 1e400}',
    "nan": M + b'"input": "hi", "temperature": NaN}',
    "infinity": M + b'"input": "hi", "presence_penalty": -Infinity}',
    "nested-1000": M + b'"input": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "nested-objects-1000": M + b'"input": "hi", "metadata": ' + _deep(1000) + b"}",
    "schema-nested-60": _tools(_schema(30)),
    "schema-nested-200": _tools(_schema(100)),
    "schema-self-ref": _tools({"type": "object", "properties": {"a": {"$ref": "#"}}}),
    "schema-bad-ref": _tools({"$ref": "#/definitions/nope"}),
    "schema-remote-ref": _tools({"$ref": "http://169.254.169.254/latest/meta-data"}),
    "format-schema-nested-200": M + b'"input": "hi", "text": {"format": {"type": "json_schema", "name": "o", '
                                    b'"schema": ' + json.dumps(_schema(100)).encode() + b"}}}",
    "raw-surrogate": M + b'"input": "\xed\xa0\x80"}',
    "escaped-surrogate": M + b'"input": "\\ud800"}',
    "invalid-utf8": M + b'"input": "\xff\xfe"}',
    "overlong-utf8": M + b'"input": "\xc0\xaf"}',
    "nul": M + b'"input": "a\\u0000b", "instructions": "\\u0000"}',
    "prev-empty": M + b'"input": "hi", "previous_response_id": ""}',
    "prev-empty-background": M + b'"input": "hi", "previous_response_id": "", "background": true}',
    "prev-long": M + b'"input": "hi", "previous_response_id": "resp_' + b"a" * 10000 + b'"}',
    "prev-traversal": M + b'"input": "hi", "previous_response_id": "resp_../../x"}',
    "metadata-1000-pairs": M + b'"input": "hi", "metadata": ' + json.dumps({f"k{i}": "v" for i in range(1000)}).encode()
                           + b"}",
    "duplicate-keys": M + b'"input": "hi", "input": [], "model": []}',
    "background-no-store": M + b'"input": "hi", "background": true, "store": false, "stream": true}',
    "stream-string": M + b'"input": "hi", "stream": "true"}',
    "include-10000": M + b'"input": "hi", "include": ' + json.dumps(["x"] * 10000).encode() + b"}",
    "tools-129": M + b'"input": "hi", "tools": ' + json.dumps(
        [{"type": "function", "name": f"f{i}"} for i in range(129)]).encode() + b"}",
    "tool-name-long": M + b'"input": "hi", "tools": [{"type": "function", "name": "' + b"n" * 1000 + b'"}]}',
    "tool-parameters-list": _tools([1, 2]),
    "conversation-array": M + b'"input": "hi", "conversation": {"id": []}}',
    "conversation-long": M + b'"input": "hi", "conversation": "conv_' + b"c" * 10000 + b'"}',
    "reasoning-array": M + b'"input": "hi", "reasoning": {"effort": []}}',
    "array-body": b"[]",
    "string-body": b'"x"',
    "null-body": b"null",
    "empty-body": b"",
    "whitespace-body": b" \n ",
}

# Megabytes each: sent to POST /v1/responses only.
HEAVY_BODIES = {
    "model-1mb": b'{"model": "' + b"m" * (1 << 20) + b'", "input": "hi"}',
    "items-300000": M + b'"input": ' + json.dumps([{"role": "user", "content": "x"}] * 300_000).encode() + b"}",
    "emoji-schema-6mb": _tools({"type": "object", "description": "\U0001F600" * 1_500_000}),
}

REQUESTS = [
    # (name, method, path, headers, body)
    ("authorization-not-utf8", "POST", "/v1/responses", {"Authorization": b"Bearer \xff\xfe"}, CREATE_BODIES["nul"]),
    ("authorization-latin1", "GET", "/v1/models", {"Authorization": "Bearer sk-f\xfczz".encode("latin-1")}, None),
    ("authorization-no-scheme", "GET", "/v1/models", {"Authorization": API_KEY}, None),
    ("authorization-20kb", "GET", "/v1/models", {"Authorization": "Bearer " + "k" * 20000}, None),
    ("idempotency-control", "POST", "/v1/responses", {"Idempotency-Key": "a\x01b"}, CREATE_BODIES["nul"]),
    ("idempotency-long", "POST", "/v1/responses", {"Idempotency-Key": "k" * 300}, CREATE_BODIES["nul"]),
    ("idempotency-deep", "POST", "/v1/responses", {"Idempotency-Key": "k-deep"}, CREATE_BODIES["nested-1000"]),
    ("latin1-charset", "POST", "/v1/responses", {"Content-Type": "application/json; charset=latin-1"},
     M + b'"input": "caf\xe9"}'),
    ("gzip-garbage", "POST", "/v1/responses", {"Content-Encoding": "gzip"}, b"\x1f\x8b not gzip"),
    ("gzip-bomb", "POST", "/v1/responses", {"Content-Encoding": "gzip"}, gzip.compress(b" " * (20 << 20))),
    ("deflate-unknown", "POST", "/v1/responses", {"Content-Encoding": "br"}, b"\x00\x01"),
    ("starting-after-10^22", "GET", "/v1/responses/{resp}?stream=true&starting_after=" + "1" + "0" * 22, {}, None),
    ("starting-after-negative", "GET", "/v1/responses/{resp}?stream=true&starting_after=-" + "9" * 20, {}, None),
    ("starting-after-5000-digits", "GET", "/v1/responses/{resp}?stream=true&starting_after=" + "9" * 5000, {}, None),
    ("starting-after-arabic-digit", "GET", "/v1/responses/{resp}?stream=true&starting_after=%D9%A3", {}, None),
    ("starting-after-nul", "GET", "/v1/responses/{resp}?stream=true&starting_after=%00", {}, None),
    ("stream-not-logged", "GET", "/v1/responses/resp_nope?stream=true", {}, None),
    ("input-items-limit-huge", "GET", "/v1/responses/{resp}/input_items?limit=1" + "0" * 30, {}, None),
    ("input-items-limit-5000-digits", "GET", "/v1/responses/{resp}/input_items?limit=" + "9" * 5000, {}, None),
    ("input-items-order", "GET", "/v1/responses/{resp}/input_items?order=sideways&after=%FF&before=%00", {}, None),
    ("input-items-after-long", "GET", "/v1/responses/{resp}/input_items?after=" + "a" * 20000, {}, None),
    ("id-bad-percent-utf8", "GET", "/v1/responses/resp_%FF%FE", {}, None),
    ("id-nul", "DELETE", "/v1/responses/resp_%00", {}, None),
    ("id-traversal", "GET", "/v1/responses/..%2F..%2Fetc", {}, None),
    ("cancel-unknown", "POST", "/v1/responses/resp_%FF/cancel", {}, None),
    ("cancel-foreground", "POST", "/v1/responses/{resp}/cancel", {}, None),
    ("conversation-items-limit", "GET", "/v1/conversations/{conv}/items?limit=10000000000000000000000&order=x", {},
     None),
    ("conversation-metadata-array", "POST", "/v1/conversations/{conv}", {}, b'{"metadata": []}'),
    ("conversation-items-type-array", "POST", "/v1/conversations/{conv}/items", {}, b'{"items": [{"type": []}]}'),
    ("conversation-item-bad-id", "GET", "/v1/conversations/{conv}/items/%FF%00", {}, None),
    ("conversation-create-deep", "POST", "/v1/conversations", {}, b'{"items": ' + b"[" * 500 + b"]" * 500 + b"}"),
    ("models-bad-id", "GET", "/v1/models/%FF", {}, None),
]


@pytest.fixture(scope="module")
def ids(live, recorder) -> dict[str, str]:
    """A stored, streamed response and a conversation to aim the path cases at."""
    http = session()
    streamed = http.post(live.base_url + "/responses", json={"model": "default", "input": "hi", "stream": True},
                         timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(streamed, "setup stream")
    resp = next(json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: "))
    conv = http.post(live.base_url + "/conversations", json={}, timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(conv, "setup conversation")
    return {"resp": resp["response"]["id"], "conv": conv.json()["id"]}


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact"])
@pytest.mark.parametrize("name", sorted(CREATE_BODIES))
def test_hostile_create_bodies(live, recorder, name, route):
    response = session().post(live.root + route, data=CREATE_BODIES[name],
                              headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(response, f"POST {route} {name}")


@pytest.mark.parametrize("name", sorted(HEAVY_BODIES))
def test_heavy_create_bodies(live, recorder, name):
    response = session().post(live.base_url + "/responses", data=HEAVY_BODIES[name],
                              headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(response, f"POST /v1/responses {name}")


@pytest.mark.parametrize("name, method, path, headers, body", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_hostile_requests(live, recorder, ids, name, method, path, headers, body):
    url = live.root + path.format(**ids)
    merged = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **headers}
    response = requests.request(method, url, data=body, headers=merged, timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(response, f"{method} {path} {name}")


async def _over_websocket(url: str, frames: list) -> list[dict]:
    """Each frame's answer: its error event, or its stream's terminal event."""
    answers = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {API_KEY}"}, max_msg_size=0) as ws:
            for frame in frames:
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                while True:
                    msg = await ws.receive(timeout=REQUEST_TIMEOUT_S[1])
                    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, frame[:200])
                    event = json.loads(msg.data)
                    if event["type"] in ("error", "response.completed", "response.failed", "response.incomplete"):
                        answers.append(event)
                        break
    return answers


def test_hostile_frames_over_websocket(live, recorder):
    frames = [b'{"type": "response.create", ' + raw.lstrip(b"{") for name, raw in sorted(CREATE_BODIES.items())
              if raw.startswith(b"{") and len(raw) < (1 << 20)]
    frames += [b"not json", b"\xff\xfe", '{"type": []}', '{"type": "response.create", "stream_id": []}', "[]"]
    answers = live.run(_over_websocket(live.root.replace("http", "ws") + "/v1/responses", frames))
    assert len(answers) == len(frames)
    for frame, event in zip(frames, answers, strict=True):
        if event["type"] == "error":
            body = json.dumps({"error": event["error"]}).encode()
            recorder.check(event["status"], body, "application/json", f"WebSocket {frame[:200]!r}")
        else:
            recorder.check(200, b"", "", f"WebSocket {frame[:200]!r}")
