"""Records and ids the stores refuse, on every backend of the contract suite (test_store.py)."""
from __future__ import annotations

import pytest

from tests.integration.test_store import make_record
from trtllm_gateway.store import InvalidRecord


def _bad(**changes):
    rec = make_record("resp_bad")
    for path, value in changes.items():
        if path == "inputs":
            rec.input_items = value
        elif path == "response":
            rec.response.update(value)
        else:
            setattr(rec, path, value)
    return rec


@pytest.mark.parametrize("rec", [
    _bad(inputs=[{"type": "message"}]),
    _bad(inputs=[{"id": "a"}, {"id": "a"}]),
    _bad(inputs=["text"]),
    _bad(response={"metadata": {1, 2}}),
    _bad(response={"temperature": float("nan")}),
    _bad(response={"id": "resp_other"}),
    _bad(response={"output": "text"}),
    _bad(status="done"),
    _bad(schema_version=2),
    _bad(id=""),
    _bad(created_at="now"),
    _bad(previous_response_id="resp_bad"),
    _bad(response={"metadata": {"k": "\ud800"}}),
    _bad(inputs=[{"id": "in_\udfff", "type": "message", "role": "user", "content": "x"}]),
    _bad(tenant="t\ud800"),
], ids=lambda r: "bad")
async def test_invalid_records_are_refused_and_not_stored(store, rec):
    with pytest.raises(InvalidRecord):
        await store.save(rec)
    assert await store.get("resp_bad", "t1") is None


async def test_ids_no_row_can_hold_are_absent_not_errors(store):
    """Lone surrogates (JSON "\\ud800" escapes) have no UTF-8 form: lookups answer "absent"."""
    await store.save(make_record("resp_ok"))
    assert await store.get("resp_\ud800", "t1") is None
    assert await store.get("resp_ok", "t\ud800") is None
    assert await store.history("resp_\udfff", "t1") is None
    assert await store.delete("resp_\ud800", "t1") is False
    assert await store.list_input_items("resp_\ud800", "t1") is None
    assert (await store.list_input_items("resp_ok", "t1", after="in_\ud800")).data == []
    assert (await store.list_input_items("resp_ok", "t1", before="\udfff")).data == []
    assert await store.get("resp_ok", "t1") is not None
