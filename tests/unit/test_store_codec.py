"""The store's one row codec (store/codec.py): keys, JSON, conversations (pure, no database)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from trtllm_gateway.store.codec import (
    check_conversation,
    check_int,
    decode_conversation,
    decode_idempotency,
    dumps,
    encode_items,
    loads,
    plain_key,
    storable,
)
from trtllm_gateway.store.records import DuplicateItemId, InvalidRecord, StoreCorrupt, StoredConversation


@pytest.mark.parametrize("key, ok", [("", True), ("resp_1", True), ("é✓", True), ("a\x00b", False),
                                     ("\ud800", False), (5, False), (None, False)])
def test_one_key_rule(key, ok):
    assert storable(key) is ok
    assert plain_key(key) is (ok and key != "")


def test_int64_bounds():
    assert check_int(2**63 - 1, "n") == 2**63 - 1
    for bad in (2**63, -(2**63) - 1, True, 1.0, "1"):
        with pytest.raises(Exception, match="64-bit integer"):
            check_int(bad, "n")


def test_json_is_compact_utf8_and_refuses_nan():
    assert dumps({"t": "é ✓", "n": [1, 2]}, "x") == '{"t":"é ✓","n":[1,2]}'
    with pytest.raises(InvalidRecord):
        dumps({"x": float("nan")}, "x")
    with pytest.raises(InvalidRecord):
        dumps({"x": object()}, "x")


def test_a_lone_surrogate_is_kept_escaped_or_refused():
    text = dumps({"t": "a\ud800b"}, "conversation item")
    assert "\\ud800" in text and storable(text) and json.loads(text) == {"t": "a\ud800b"}
    with pytest.raises(InvalidRecord, match="lone surrogate"):
        dumps({"t": "a\ud800b"}, "response", unicode_only=True)


def test_loads_refuses_what_it_cannot_read():
    assert loads('{"a":1}', "x") == {"a": 1}
    assert loads("[1]", "x", kind=list) == [1]
    for bad, kind in (("{not json", dict), ("[1]", dict), (None, dict)):
        with pytest.raises(StoreCorrupt):
            loads(bad, "x", kind=kind)


def test_conversation_items_keep_order_and_unique_ids():
    items = [{"id": "msg_1", "type": "message", "text": "é"}, {"id": "msg_2", "type": "message"}]
    rows = encode_items(items, "conv_1")
    assert [r[0] for r in rows] == ["msg_1", "msg_2"] and json.loads(rows[0][1]) == items[0]
    with pytest.raises(DuplicateItemId):
        encode_items([items[0], dict(items[0])], "conv_1")
    for bad in ([{"type": "message"}], [{"id": ""}], [{"id": "a\x00"}], ["not an item"], "not a list"):
        with pytest.raises(InvalidRecord):
            encode_items(bad, "conv_1")


def test_conversation_record_round_trip_and_validation():
    conv = StoredConversation(id="conv_1", tenant="", created_at=1700000000, metadata={"topic": "ü"})
    metadata = check_conversation(conv)
    row = SimpleNamespace(id=conv.id, tenant=conv.tenant, created_at=conv.created_at, metadata=metadata)
    assert decode_conversation(row) == conv
    for bad in (dict(metadata={"n": 1}), dict(id=""), dict(tenant="\x00"), dict(created_at=2**64)):
        with pytest.raises(InvalidRecord):
            check_conversation(StoredConversation(**{**conv.__dict__, **bad}))


def test_idempotency_rows():
    done = SimpleNamespace(state="done", body_hash="h", response='{"id":"resp_1"}', created_at=1)
    assert decode_idempotency(done, "k").response == {"id": "resp_1"}
    running = SimpleNamespace(state="running", body_hash="h", response=None, created_at=1)
    assert decode_idempotency(running, "k").response is None
    with pytest.raises(StoreCorrupt):
        decode_idempotency(SimpleNamespace(state="lost", body_hash="h", response=None, created_at=1), "k")
