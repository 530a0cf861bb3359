"""Contract tests of the store's conversations and idempotency keys, on every backend.

Same backends as tests/integration/test_store.py (a real SQLite file, a real PostgreSQL
database per test); the behaviour asserted is the protocol in store/base.py.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_store import BACKEND_KINDS
from trtllm_gateway.store import DuplicateItemId, InvalidPageRequest, StoredConversation, StoreError

T0 = 1_700_000_000


@pytest.fixture(params=sorted(BACKEND_KINDS))
def backend(request, tmp_path):
    kind = BACKEND_KINDS[request.param]
    needs = {name: request.getfixturevalue(name) for name in getattr(kind, "fixtures", ())}
    return kind(tmp_path, **needs)


@pytest.fixture
async def store(backend):
    s = backend.make()
    await s.open()
    yield s
    await s.close()


def item(item_id: str, text: str = "hi ✓") -> dict:
    return {"id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def conv(cid: str = "conv_1", tenant: str = "t1", created_at: int = T0, **metadata) -> StoredConversation:
    return StoredConversation(id=cid, tenant=tenant, created_at=created_at, metadata=dict(metadata))


async def test_create_get_update_delete(store):
    await store.create_conversation(conv(topic="x"), [item("m1"), item("m2", "\ud800 lone surrogate \x00")])
    got = await store.get_conversation("conv_1", "t1")
    assert got == conv(topic="x")
    assert await store.conversation_items("conv_1", "t1") == [item("m1"), item("m2", "\ud800 lone surrogate \x00")]
    updated = await store.update_conversation("conv_1", "t1", {"topic": "y"}, T0 + 5)
    assert updated.metadata == {"topic": "y"} and updated.created_at == T0
    assert await store.delete_conversation("conv_1", "t1") is True
    assert await store.get_conversation("conv_1", "t1") is None
    assert await store.conversation_items("conv_1", "t1") is None
    assert await store.delete_conversation("conv_1", "t1") is False
    await store.create_conversation(conv("conv_2"), [])
    with pytest.raises(StoreError):  # a live id cannot be created twice
        await store.create_conversation(conv("conv_2"), [])


async def test_tenant_isolation(store):
    await store.create_conversation(conv(tenant="alice"), [item("m1")])
    assert await store.get_conversation("conv_1", "bob") is None
    assert await store.update_conversation("conv_1", "bob", {}, T0) is None
    assert await store.append_conversation_items("conv_1", "bob", [item("m2")], T0) is False
    assert await store.list_conversation_items("conv_1", "bob") is None
    assert await store.conversation_items("conv_1", "bob") is None
    assert await store.get_conversation_item("conv_1", "m1", "bob") is None
    assert await store.delete_conversation_item("conv_1", "m1", "bob") is None
    assert await store.delete_conversation("conv_1", "bob") is False
    assert [i["id"] for i in await store.conversation_items("conv_1", "alice")] == ["m1"]


async def test_append_items_and_item_ops(store):
    await store.create_conversation(conv(), [item("m1")])
    assert await store.append_conversation_items("conv_1", "t1", [item("m2"), item("m3")], T0 + 1) is True
    assert await store.get_conversation_item("conv_1", "m2", "t1") == item("m2")
    assert await store.get_conversation_item("conv_1", "nope", "t1") is None
    assert await store.delete_conversation_item("conv_1", "m2", "t1") is True
    assert await store.delete_conversation_item("conv_1", "m2", "t1") is False
    assert await store.append_conversation_items("conv_1", "t1", [item("m4")], T0 + 2) is True
    assert [i["id"] for i in await store.conversation_items("conv_1", "t1")] == ["m1", "m3", "m4"]
    assert await store.append_conversation_items("conv_missing", "t1", [item("x")], T0) is False


async def test_duplicate_item_ids_are_refused_atomically(store):
    await store.create_conversation(conv(), [item("m1")])
    with pytest.raises(DuplicateItemId) as err:
        await store.append_conversation_items("conv_1", "t1", [item("m2"), item("m1")], T0)
    assert err.value.item_id == "m1"
    with pytest.raises(DuplicateItemId):
        await store.append_conversation_items("conv_1", "t1", [item("m5"), item("m5")], T0)
    assert [i["id"] for i in await store.conversation_items("conv_1", "t1")] == ["m1"]  # nothing half-written


async def test_concurrent_appends_never_interleave(store):
    await store.create_conversation(conv(), [])
    batches = [[item(f"b{b}_{n}") for n in range(3)] for b in range(6)]
    await asyncio.gather(*(store.append_conversation_items("conv_1", "t1", batch, T0) for batch in batches))
    ids = [i["id"] for i in await store.conversation_items("conv_1", "t1")]
    assert sorted(ids) == sorted(i["id"] for batch in batches for i in batch)
    for start in range(0, len(ids), 3):  # every batch contiguous, in its own order
        prefix = ids[start].rsplit("_", 1)[0]
        assert ids[start:start + 3] == [f"{prefix}_{n}" for n in range(3)]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_pages_follow_the_cursor(store, order):
    ids = [f"m{n}" for n in range(7)]
    await store.create_conversation(conv(), [item(i) for i in ids])
    expected = ids if order == "asc" else ids[::-1]
    seen, after = [], None
    while True:
        page = await store.list_conversation_items("conv_1", "t1", after=after, limit=3, order=order)
        seen += [i["id"] for i in page.data]
        assert page.first_id == page.data[0]["id"] and page.last_id == page.data[-1]["id"]
        if not page.has_more:
            break
        after = page.last_id
    assert seen == expected
    empty = await store.list_conversation_items("conv_1", "t1", after="unknown", order=order)
    assert empty.data == [] and empty.first_id is None and empty.has_more is False
    with pytest.raises(InvalidPageRequest):
        await store.list_conversation_items("conv_1", "t1", limit=0)


async def test_idempotency_claim_finish_release(store):
    assert await store.claim_idempotency_key("t1", "k1", "h1", T0, T0 - 600) is None
    running = await store.claim_idempotency_key("t1", "k1", "h2", T0 + 1, T0 - 600)
    assert running.state == "running" and running.body_hash == "h1" and running.response is None
    assert await store.claim_idempotency_key("t2", "k1", "h1", T0, T0 - 600) is None  # per tenant
    await store.finish_idempotency_key("t1", "k1", {"id": "resp_1", "output": ["✓"]})
    done = await store.claim_idempotency_key("t1", "k1", "h1", T0 + 2, T0 + 10_000)  # done is never stale
    assert done.state == "done" and done.response == {"id": "resp_1", "output": ["✓"]}
    await store.release_idempotency_key("t1", "k1")  # only running claims are released
    assert (await store.claim_idempotency_key("t1", "k1", "h1", T0, T0)).state == "done"
    await store.release_idempotency_key("t2", "k1")
    assert await store.claim_idempotency_key("t2", "k1", "h3", T0, T0) is None


async def test_a_stale_running_claim_is_taken_over(store):
    assert await store.claim_idempotency_key("t1", "k", "h1", T0, T0 - 600) is None
    assert (await store.claim_idempotency_key("t1", "k", "h1", T0 + 5, T0 - 600)).state == "running"
    assert await store.claim_idempotency_key("t1", "k", "h2", T0 + 700, T0 + 100) is None  # claimed before T0+100
    assert (await store.claim_idempotency_key("t1", "k", "h1", T0 + 701, T0)).body_hash == "h2"


async def test_concurrent_claims_have_one_winner(store):
    results = await asyncio.gather(*(store.claim_idempotency_key("t1", "race", "h", T0, T0 - 600)
                                     for _ in range(8)))
    assert sum(r is None for r in results) == 1


async def test_purge_drops_idle_conversations_and_old_keys(store):
    await store.create_conversation(conv("conv_old"), [item("a")])
    await store.create_conversation(conv("conv_new"), [item("b")])
    await store.append_conversation_items("conv_new", "t1", [item("c")], T0 + 100)
    await store.claim_idempotency_key("t1", "old", "h", T0, T0)
    await store.claim_idempotency_key("t1", "new", "h", T0 + 100, T0)
    assert await store.purge_conversations_older_than(T0 + 50) == 2
    assert await store.get_conversation("conv_old", "t1") is None
    assert [i["id"] for i in await store.conversation_items("conv_new", "t1")] == ["b", "c"]
    assert await store.claim_idempotency_key("t1", "old", "h2", T0 + 101, T0) is None  # gone: claimable
    assert (await store.claim_idempotency_key("t1", "new", "h2", T0 + 101, T0)).body_hash == "h"


async def test_unstorable_ids_read_as_absent(store):
    await store.create_conversation(conv(), [item("m1")])
    assert await store.get_conversation("conv\x00", "t1") is None
    assert await store.get_conversation_item("conv_1", "m\ud800", "t1") is None
    assert await store.delete_conversation("conv\x00", "t1") is False
