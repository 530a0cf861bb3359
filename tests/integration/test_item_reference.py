"""``item_reference`` input items, end to end: a later turn names stored items by id.

The stack is test_reasoning_roundtrip's (a scripted engine, the real service with the
``think`` parser, the real gateway with two tenants and a ``--reasoning-key``; the chat
template renders an earlier assistant turn's reasoning as ``<think>...</think>``), so the
prompt the engine receives shows which items reached the model. Turn one is stored
(``store`` at its default), as the Vercel AI SDK leaves it; turn two sends the first
response's reasoning and message back as ``{"type": "item_reference", "id"}``, as that SDK
does by default.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.fixtures.gateway import check_stream, message_text, raw_stream
from tests.fixtures.waiting import until
from tests.integration.test_reasoning_roundtrip import REASONING, A, B, stack  # noqa: F401
from trtllm_gateway import compaction

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEEN = f"<|im_start|>assistant\n<think>{REASONING}</think>Noted.<|im_end|>"
REMEMBERED = "I remembered my reasoning."


async def _call(handle, method: str, path: str, body: dict | None = None, headers: dict = A) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, handle.base_url + path, json=body,
                                                        headers=headers) as r:
        return r.status, await r.json()


async def _stored_turn(handle, include: list[str] | None = None) -> dict:
    body = {"model": "default", "input": "[[think]]", "reasoning": {"summary": "auto"}, "include": include or []}
    status, resp = await _call(handle, "POST", "/responses", body)
    assert status == 200 and [i["type"] for i in resp["output"]] == ["reasoning", "message"], resp
    return resp


def _by_reference(first: dict, question: str = "What was it?") -> list[dict]:
    reasoning, message = first["output"]
    return [{"role": "user", "content": "[[think]]"}, {"type": "item_reference", "id": reasoning["id"]},
            {"id": message["id"]},  # type left out, as OpenAI's ItemReferenceParam allows
            {"role": "user", "content": question}]


async def test_referenced_reasoning_and_message_reach_the_model_and_are_stored_resolved(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    status, second = await _call(handle, "POST", "/responses", {"model": "default", "input": _by_reference(first)})
    assert status == 200, second
    assert message_text(second) == REMEMBERED and SEEN in prompts[-1]
    status, page = await _call(handle, "GET", f"/responses/{second['id']}/input_items?order=asc")
    reasoning, message = first["output"]
    assert status == 200 and [i["id"] for i in page["data"][1:3]] == [reasoning["id"], message["id"]]
    assert page["data"][1]["summary"] == reasoning["summary"]  # the item itself, not the reference
    assert page["data"][2]["content"][0]["text"] == "Noted." and page["data"][2]["role"] == "assistant"
    status, third = await _call(handle, "POST", "/responses", {  # the resolved items are history now
        "model": "default", "input": "And now?", "previous_response_id": second["id"]})
    assert status == 200 and prompts[-1].count(SEEN) == 1, third


async def test_the_control_without_the_references_the_model_sees_no_reasoning(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    window = [item for item in _by_reference(first) if item.get("role")]
    status, second = await _call(handle, "POST", "/responses", {"model": "default", "input": window})
    assert status == 200 and message_text(second) == "I have no earlier reasoning." and "<think>" not in prompts[-1]


async def test_encrypted_reasoning_stored_with_the_response_is_opened(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle, include=["reasoning.encrypted_content"])
    assert first["output"][0]["encrypted_content"].startswith("rsn1.k1.")
    status, second = await _call(handle, "POST", "/responses", {"model": "default", "input": _by_reference(first),
                                                                 "stream": False, "store": False})
    assert status == 200 and message_text(second) == REMEMBERED and SEEN in prompts[-1]


async def test_a_streamed_turn_resolves_references_too(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    status, _, final = await raw_stream(handle, {"model": "default", "input": _by_reference(first)}, A)
    assert status == 200 and final["status"] == "completed" and message_text(final) == REMEMBERED


async def test_a_background_turn_stores_and_runs_the_resolved_items(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    status, queued = await _call(handle, "POST", "/responses", {"model": "default", "input": _by_reference(first),
                                                                 "background": True})
    assert status == 200 and queued["status"] == "queued", queued

    async def done() -> dict | None:
        resp = (await _call(handle, "GET", f"/responses/{queued['id']}"))[1]
        return resp if resp["status"] not in ("queued", "in_progress") else None

    final = await until(done)
    assert final and final["status"] == "completed" and message_text(final) == REMEMBERED, final
    _, page = await _call(handle, "GET", f"/responses/{queued['id']}/input_items?order=asc")
    assert [i["type"] for i in page["data"]] == ["message", "reasoning", "message", "message"]


async def test_a_websocket_turn_resolves_references(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    url = handle.base_url.replace("http", "ws", 1) + "/responses"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=A) as ws:
        await ws.send_json({"type": "response.create", "model": "default", "input": _by_reference(first)})
        events: list[dict] = []
        while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
            events.append(json.loads((await asyncio.wait_for(ws.receive(), 30)).data))  # a hang guard
    assert events[-1]["type"] == "response.completed", events[-1]
    assert message_text(check_stream(events)) == REMEMBERED and SEEN in prompts[-1]


async def _refused(handle, body: dict, headers: dict = A) -> dict:
    status, error = await _call(handle, "POST", "/responses", body, headers)
    assert status == 400, error
    return error["error"]


async def test_an_unknown_id_is_400_naming_the_item(stack):  # noqa: F811
    handle, _ = stack
    window = [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_nowhere"}]
    error = await _refused(handle, {"model": "default", "input": window})
    assert error == {"message": "Item with id 'msg_nowhere' not found.", "type": "invalid_request_error",
                     "param": "input[1]", "code": None}


async def test_another_tenants_item_is_as_unknown(stack):  # noqa: F811
    handle, _ = stack
    first = await _stored_turn(handle)
    error = await _refused(handle, {"model": "default", "input": _by_reference(first)}, B)
    assert error["param"] == "input[1]"
    assert error["message"] == f"Item with id '{first['output'][0]['id']}' not found."


async def test_a_bad_reference_names_its_id(stack):  # noqa: F811
    handle, _ = stack
    error = await _refused(handle, {"model": "default", "input": [{"type": "item_reference", "id": ""}]})
    assert error["param"] == "input[0].id" and error["type"] == "invalid_request_error"


async def test_referencing_one_item_twice_is_400_before_generating(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    before = len(prompts)
    window = _by_reference(first) + [{"type": "item_reference", "id": first["output"][1]["id"]}]
    error = await _refused(handle, {"model": "default", "input": window})
    assert error["param"] == "input[4]" and len(prompts) == before


async def test_input_tokens_counts_the_referenced_items(stack):  # noqa: F811
    handle, _ = stack
    first = await _stored_turn(handle)
    status, referenced = await _call(handle, "POST", "/responses/input_tokens",
                                     {"model": "default", "input": _by_reference(first)})
    assert status == 200, referenced
    whole = [{"role": "user", "content": "[[think]]"}, *first["output"], {"role": "user", "content": "What was it?"}]
    _, sent = await _call(handle, "POST", "/responses/input_tokens", {"model": "default", "input": whole})
    assert referenced["input_tokens"] == sent["input_tokens"]
    bare = [whole[0], whole[-1]]
    _, control = await _call(handle, "POST", "/responses/input_tokens", {"model": "default", "input": bare})
    assert control["input_tokens"] < referenced["input_tokens"]
    error = await _refused(handle, {"model": "default", "input": [{"id": "rs_nowhere"}]})
    assert error["param"] == "input[0]"


async def test_compact_summarises_the_referenced_items(stack):  # noqa: F811
    handle, prompts = stack
    first = await _stored_turn(handle)
    window = _by_reference(first)
    status, body = await _call(handle, "POST", "/responses/compact", {"model": "default", "input": window})
    assert status == 200, body
    assert compaction.REQUEST in prompts[-1] and SEEN.split("\n", 1)[1] in prompts[-1]
    status, error = await _call(handle, "POST", "/responses/compact",
                                {"model": "default", "input": [{"type": "item_reference", "id": "msg_nowhere"}]})
    assert status == 400 and error["error"]["param"] == "input[0]"


async def test_a_conversation_item_is_found_by_its_id(stack):  # noqa: F811
    handle, prompts = stack
    status, conversation = await _call(handle, "POST", "/conversations", {"items": [
        {"type": "message", "role": "user", "content": "The password is swordfish."}]})
    assert status == 200, conversation
    status, listed = await _call(handle, "GET", f"/conversations/{conversation['id']}/items")
    item_id = listed["data"][0]["id"]
    window = [{"type": "item_reference", "id": item_id}, {"role": "user", "content": "What was it?"}]
    status, resp = await _call(handle, "POST", "/responses", {"model": "default", "input": window})
    assert status == 200, resp
    assert "The password is swordfish." in prompts[-1]
    _, page = await _call(handle, "GET", f"/responses/{resp['id']}/input_items?order=asc")
    assert page["data"][0]["id"] == item_id and page["data"][0]["content"][0]["text"] == "The password is swordfish."
    error = await _refused(handle, {"model": "default", "input": window}, B)  # another tenant's conversation
    assert error["message"] == f"Item with id '{item_id}' not found." and error["param"] == "input[0]"
