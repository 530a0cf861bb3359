"""The SQL store's shared machinery, on every backend of the contract suite (test_store.py).

What both backends now do alike: the transaction kinds (a snapshot for reads, an exclusive
writer or READ COMMITTED for writes), the tables created from ``schema.py``, one key check
for every look-up and write, cursors past every event.
"""
from __future__ import annotations

import pytest
from sqlalchemy import event, inspect, text

from tests.integration.test_store import backend, make_record, store  # noqa: F401 - fixtures
from trtllm_gateway.store import InvalidRecord, LoggedEvent, StoredConversation, StoreError
from trtllm_gateway.store.schema import metadata

T0 = 1_700_000_000_000


def _queued(rid: str):
    return make_record(rid, status="queued", outputs=[])


async def test_reads_are_snapshots_and_writes_exclusive(store):  # noqa: F811
    if store.kind == "PostgreSQL":
        setting = text("SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')")
        read = await store._read(lambda conn: conn.execute(setting))
        write = await store._write(lambda conn: conn.execute(setting))
        assert (read.one(), write.one()) == (("repeatable read", "on"), ("read committed", "off"))
        return
    begins = []
    for engine in store._engines:
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: begins.append(statement))
    await store._read(lambda conn: conn.execute(text("SELECT 1")))
    await store._write(lambda conn: conn.execute(text("SELECT 1")))
    # SQLite: a deferred BEGIN reads one WAL snapshot; BEGIN IMMEDIATE takes the write lock first
    assert begins == ["BEGIN", "SELECT 1", "BEGIN IMMEDIATE", "SELECT 1"]


async def test_every_declared_table_is_created_with_its_columns(store):  # noqa: F811
    def columns(conn):
        found = inspect(conn)
        return {t: [c["name"] for c in found.get_columns(t)] for t in found.get_table_names()}

    created = await store._read(lambda conn: conn.run_sync(columns))
    assert created == {t.name: [c.name for c in t.columns] for t in metadata.sorted_tables}


async def test_a_cursor_past_every_event_reads_nothing(store):  # noqa: F811
    await store.enqueue_job(_queued("resp_e"), {}, [LoggedEvent(0, "response.queued", "{}")], now_ms=T0)
    page = await store.read_events("resp_e", "t1", 2**63 - 1, 10)  # events.py's largest starting_after
    assert (page.events, page.last, page.open) == ([], 0, True)


@pytest.mark.parametrize("bad", ["resp\x00", "resp_\ud800"])
async def test_ids_no_row_can_hold_are_absent_everywhere(store, bad):  # noqa: F811
    await store.enqueue_job(_queued("resp_ok"), {}, [], now_ms=T0)
    assert await store.read_events(bad, "t1", -1, 10) is None
    assert await store.read_events("resp_ok", bad, -1, 10) is None
    assert (await store.request_cancel(bad, "t1", "r", 1000, now_ms=T0)).state == "absent"
    assert (await store.request_cancel("resp_ok", bad, "r", 1000, now_ms=T0)).state == "absent"
    assert await store.get(bad, "t1") is None and await store.delete(bad, "t1") is False
    assert await store.get_conversation(bad, "t1") is None
    assert await store.conversation_items("conv", bad) is None
    with pytest.raises(StoreError):
        await store.claim_idempotency_key("t1", bad, "h", 1, 0)


async def test_records_no_row_can_hold_are_refused_whole(store):  # noqa: F811
    nul_item = make_record("resp_n")
    nul_item.input_items[0]["id"] = "in\x00"
    for bad in (make_record("resp\x00"), nul_item, make_record("resp_big", created_at=2**63)):
        with pytest.raises(InvalidRecord):
            await store.save(bad)
    with pytest.raises(InvalidRecord):
        await store.enqueue_job(_queued("resp_ev"), {}, [LoggedEvent(0, "x", '{"t":"\ud800"}')])
    assert await store.get("resp_ev", "t1") is None  # nothing of it was written
    with pytest.raises(InvalidRecord):
        await store.create_conversation(StoredConversation("conv\x00", "t1", 1, {}), [])
    for purge in (store.purge_older_than, store.purge_conversations_older_than):
        with pytest.raises(StoreError):
            await purge(2**63)


async def test_conversation_text_keeps_unicode_and_survives_lone_surrogates(store):  # noqa: F811
    items = [{"id": "m1", "text": "✓ ok"}, {"id": "m2", "text": "lone \ud800"}]
    await store.create_conversation(StoredConversation("conv_u", "t1", 1, {"k": "✓"}), items)

    def payloads(conn):
        return dict(conn.execute(text("SELECT item_id, payload FROM conversation_items")).all())

    stored = await store._read(lambda conn: conn.run_sync(payloads))
    assert stored == {"m1": '{"id":"m1","text":"✓ ok"}', "m2": '{"id":"m2","text":"lone \\ud800"}'}
    assert await store.conversation_items("conv_u", "t1") == items


async def test_a_transaction_started_as_the_store_closes_ends_in_its_result_or_store_error(store):  # noqa: F811
    import asyncio

    pending = asyncio.ensure_future(store.find_items(["msg_x"], "t1"))
    await asyncio.sleep(0)  # its transaction task exists, its connection not yet taken
    await store.close()
    try:
        assert await pending == {}
    except StoreError:
        pass  # refused cleanly: not an AssertionError or the pool's RuntimeError
