"""Conversations API end to end with the openai SDK, and `conversation` on responses.create.

Scripted engine (tests/integration/scripted_stack.py): the "model" answers a name question
from whatever history reached its prompt, so the tests see what the gateway sent.
"""
from __future__ import annotations

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList
from pydantic import TypeAdapter

from tests.fixtures.gateway import AUTH_KEYS, plain, raw_stream, start_gateway
from tests.integration.scripted_stack import start_stack

QUESTION = "What did I say my name was?"


def reply(prompt: str) -> str:
    if QUESTION in prompt:
        return "Your name is Ada." if "My name is Ada" in prompt else "I do not know."
    if "Tell me everything" in prompt:
        return "Once upon a time " * 30
    return "Nice to meet you."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("conversations"), reply)
    yield s
    await s.stop()


def _item_adapter():
    from openai.types.conversations.conversation_item import ConversationItem
    return TypeAdapter(ConversationItem)


async def _raw(stack, method: str, path: str, **kw) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, stack.handle.base_url + path, **kw) as resp:
            return resp.status, await resp.json()


async def test_conversation_lifecycle_with_the_sdk(stack):
    c = stack.handle.client
    conv = await c.conversations.create(items=[{"role": "user", "content": "My name is Ada"}],
                                        metadata={"topic": "names"})
    Conversation.model_validate(plain(conv))
    assert conv.id.startswith("conv_") and conv.object == "conversation" and conv.metadata == {"topic": "names"}
    assert plain(await c.conversations.retrieve(conv.id)) == plain(conv)
    updated = await c.conversations.update(conv.id, metadata={"topic": "people"})
    assert updated.metadata == {"topic": "people"} and updated.created_at == conv.created_at

    added = await c.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "assistant", "content": "Noted."},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}])
    ConversationItemList.model_validate(plain(added))
    assert [i.type for i in added.data] == ["message", "function_call"] and added.has_more is False
    listed = [i async for i in c.conversations.items.list(conv.id, order="asc")]
    assert [i.id for i in listed[1:]] == [i.id for i in added.data]
    for item in listed:
        _item_adapter().validate_python(plain(item))
    assert plain(await c.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)) \
        == plain(added.data[0])

    after_delete = await c.conversations.items.delete(added.data[1].id, conversation_id=conv.id)
    assert after_delete.id == conv.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError) as err:
        await c.conversations.items.retrieve(added.data[1].id, conversation_id=conv.id)
    assert err.value.body["param"] == "item_id"

    gone = await c.conversations.delete(conv.id)
    ConversationDeletedResource.model_validate(plain(gone))
    assert gone.deleted is True and gone.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        await c.conversations.retrieve(conv.id)


async def test_item_pages_follow_after_and_order(stack):
    c = stack.handle.client
    conv = await c.conversations.create(items=[{"role": "user", "content": f"m{n}"} for n in range(5)])
    asc = [i async for i in c.conversations.items.list(conv.id, order="asc", limit=2)]
    assert [i.content[0].text for i in asc] == [f"m{n}" for n in range(5)]
    desc = [i.id async for i in c.conversations.items.list(conv.id, limit=2)]  # default order desc
    assert desc == [i.id for i in reversed(asc)]
    page = await c.conversations.items.list(conv.id, order="asc", limit=2, after=asc[1].id)
    assert [i.id for i in page.data] == [asc[2].id, asc[3].id] and page.has_more is True
    status, body = await _raw(stack, "GET", f"/conversations/{conv.id}/items?limit=0")
    assert status == 400 and body["error"]["param"] == "limit"


async def test_responses_read_and_extend_the_conversation(stack):
    c = stack.handle.client
    conv = await c.conversations.create(items=[{"role": "user", "content": "My name is Ada"}])
    first = await c.responses.create(model="default", conversation=conv.id, input=QUESTION)
    assert first.output_text == "Your name is Ada."
    assert first.conversation.id == conv.id and first.previous_response_id is None
    items = [i async for i in c.conversations.items.list(conv.id, order="asc")]
    assert [i.type for i in items] == ["message"] * 3
    assert items[1].content[0].text == QUESTION and items[2].id == first.output[0].id
    assert plain(items[2]) == plain(first.output[0])

    # the object form, streamed: history is the whole conversation, the turn is appended
    status, events, final = await raw_stream(stack.handle, {"model": "default", "conversation": {"id": conv.id},
                                                            "input": "Thanks!"})
    assert status == 200 and final["conversation"] == {"id": conv.id}
    assert QUESTION in stack.prompts[-1] and "Your name is Ada." in stack.prompts[-1]
    items = [i async for i in c.conversations.items.list(conv.id, order="asc")]
    assert len(items) == 5 and items[-1].id == final["output"][0]["id"]
    assert plain(await c.responses.retrieve(final["id"])) == final  # stored as usual too

    # a fresh conversation knows nothing of that one
    other = await c.conversations.create()
    assert (await c.responses.create(model="default", conversation=other.id, input=QUESTION)).output_text \
        == "I do not know."


async def test_incomplete_turns_are_appended_failed_requests_are_not(stack):
    c = stack.handle.client
    conv = await c.conversations.create()
    short = await c.responses.create(model="default", conversation=conv.id, input="Tell me everything",
                                     max_output_tokens=16)
    assert short.status == "incomplete"
    with pytest.raises(openai.BadRequestError):  # refused before generating: nothing appended
        await c.responses.create(model="default", conversation=conv.id, input="Hi", temperature=5)
    items = [i async for i in c.conversations.items.list(conv.id, order="asc")]
    assert [i.role for i in items] == ["user", "assistant"]
    assert items[1].status == "incomplete" and items[1].id == short.output[0].id


async def test_conversation_errors(stack):
    c = stack.handle.client
    conv = await c.conversations.create(items=[{"id": "msg_fixed", "role": "user", "content": "My name is Ada"}])
    cases = [
        ({"conversation": conv.id, "previous_response_id": "resp_x"}, 400, "conversation"),
        ({"conversation": "conv_missing"}, 404, "conversation"),
        ({"conversation": {"id": 3}}, 400, "conversation"),
        ({"conversation": conv.id, "input": [{"id": "msg_fixed", "role": "user", "content": "again"}]},
         400, "input[0].id"),
    ]
    for extra, status, param in cases:
        code, body = await _raw(stack, "POST", "/responses", json={"model": "default", "input": "hi", **extra})
        assert (code, body["error"]["param"]) == (status, param), body
    too_many = [{"role": "user", "content": "x"}] * 21
    for path, body, param in [
        ("/conversations", {"items": too_many}, "items"),
        ("/conversations", {"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
        ("/conversations", {"title": "x"}, "title"),
        ("/conversations", {"metadata": {"k": 1}}, "metadata"),
        (f"/conversations/{conv.id}", {}, "metadata"),
        (f"/conversations/{conv.id}/items", {"items": []}, "items"),
        (f"/conversations/{conv.id}/items", {"items": [{"id": "msg_fixed", "role": "user", "content": "x"}]},
         "items[0].id"),
    ]:
        code, err = await _raw(stack, "POST", path, json=body)
        assert (code, err["error"]["param"]) == (400, param), (path, err)
    for method, path in [("GET", "/conversations/conv_nope"), ("POST", "/conversations/conv_nope/items"),
                         ("GET", "/conversations/conv_nope/items"), ("DELETE", "/conversations/conv_nope"),
                         ("GET", f"/conversations/{conv.id}/items/msg_nope"),
                         ("DELETE", f"/conversations/{conv.id}/items/msg_nope")]:
        kw = {"json": {"items": [{"role": "user", "content": "x"}]}} if method == "POST" else {}
        code, err = await _raw(stack, method, path, **kw)
        assert code == 404 and err["error"]["type"] == "invalid_request_error", (method, path, err)


async def test_conversations_are_tenant_scoped(stack, tmp_path):
    handle, runner = await start_gateway(stack.server.address, tmp_path, api_keys=AUTH_KEYS)
    try:
        alice = handle.client
        bob = alice.with_options(api_key=AUTH_KEYS[1])
        conv = await alice.conversations.create(items=[{"role": "user", "content": "My name is Ada"}])
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.responses.create(model="default", conversation=conv.id, input=QUESTION)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.delete(conv.id)
        assert (await alice.responses.create(model="default", conversation=conv.id, input=QUESTION)).output_text \
            == "Your name is Ada."
    finally:
        await handle.client.close()
        await runner.cleanup()
