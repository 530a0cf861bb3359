"""Contract tests of ``find_items`` (what an ``item_reference`` names), on every backend:
response items, then conversation items.

Same backends as tests/integration/test_store.py (a real SQLite file, a real PostgreSQL
database per test); the behaviour asserted is the protocol in store/base.py.
"""
from __future__ import annotations

import pytest

from tests.integration.test_store import make_record
from tests.integration.test_store_conversations import T0, conv, item
from trtllm_gateway.store import StoreCorrupt
from trtllm_gateway.store.responses import FIND_BATCH

REASONING = {"id": "rs_r1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}],
             "content": [], "encrypted_content": "rsn1.k1.sealed"}
MESSAGE = {"id": "msg_r1", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "answer", "annotations": []}]}


async def test_finds_output_and_input_items_by_id_in_one_call(store):
    await store.save(make_record("r1", outputs=[REASONING, MESSAGE]))
    found = await store.find_items(["msg_r1", "rs_r1", "r1_in1"], "t1")
    assert found["msg_r1"] == MESSAGE and found["rs_r1"] == REASONING  # as stored, encrypted content kept
    assert found["r1_in1"]["content"][0]["text"] == "question 1 of r1 ✓"
    assert set(found) == {"msg_r1", "rs_r1", "r1_in1"}


async def test_unknown_ids_and_other_tenants_items_are_absent(store):
    await store.save(make_record("r1", tenant="t1"))
    await store.save(make_record("r2", tenant="t2"))
    assert await store.find_items(["msg_r1", "msg_r2", "msg_nowhere"], "t1") == {
        "msg_r1": (await store.get("r1", "t1")).response["output"][0]}
    assert await store.find_items(["msg_r1"], "t2") == {}
    assert await store.find_items([], "t1") == {}


async def test_ids_no_row_can_hold_are_absent(store):
    await store.save(make_record("r1"))
    assert await store.find_items(["msg_r1\x00", "\ud800", "msg_r1"], "t1") == {
        "msg_r1": (await store.get("r1", "t1")).response["output"][0]}
    assert await store.find_items(["msg_r1"], "t1\x00") == {}


async def test_an_output_item_wins_over_a_later_input_reusing_its_id(store):
    await store.save(make_record("r1", created_at=100))
    later = make_record("r2", prev="r1", created_at=200)
    later.input_items = [dict(later.input_items[0], id="msg_r1")]  # a client resent it with its id
    await store.save(later)
    found = await store.find_items(["msg_r1"], "t1")
    assert found["msg_r1"]["role"] == "assistant"


async def test_between_inputs_the_oldest_response_wins(store):
    for rid, created in (("r2", 200), ("r1", 100), ("r3", 300)):
        record = make_record(rid, created_at=created, n_inputs=1)
        record.input_items[0]["id"] = "msg_shared"
        await store.save(record)
    found = await store.find_items(["msg_shared"], "t1")
    assert found["msg_shared"]["content"][0]["text"] == "question 0 of r1 ✓"


async def test_deleted_responses_items_are_gone(store):
    await store.save(make_record("r1"))
    assert await store.delete("r1", "t1")
    assert await store.find_items(["msg_r1", "r1_in0"], "t1") == {}


async def test_more_ids_than_one_query_takes(store):
    await store.save(make_record("r1"))
    ids = [f"missing_{n}" for n in range(FIND_BATCH)] + ["msg_r1", "r1_in0"]
    assert set(await store.find_items(ids, "t1")) == {"msg_r1", "r1_in0"}


async def test_a_row_of_an_unknown_version_is_refused(store, backend):
    await store.save(make_record("r1"))
    await backend.tamper("r1", schema_version=99)
    with pytest.raises(StoreCorrupt):
        await store.find_items(["msg_r1"], "t1")


async def test_conversation_items_are_found_after_response_items(store):
    await store.create_conversation(conv("conv_a", created_at=T0), [item("m1", "first"), item("msg_r1", "a copy")])
    await store.create_conversation(conv("conv_b", created_at=T0 + 5), [item("m1", "second"), item("m2")])
    await store.create_conversation(conv("conv_c", tenant="t2"), [item("m3")])
    await store.save(make_record("r1"))
    found = await store.find_items(["m1", "m2", "m3", "msg_r1"], "t1")
    assert found["m1"] == item("m1", "first")  # the oldest conversation's
    assert found["m2"] == item("m2")
    assert found["msg_r1"] == (await store.get("r1", "t1")).response["output"][0]  # a response's item first
    assert "m3" not in found  # another tenant's conversation
    assert await store.delete_conversation("conv_a", "t1")
    assert (await store.find_items(["m1"], "t1"))["m1"] == item("m1", "second")
