"""Response store contract tests, run against every registered backend on real databases.

Each backend in BACKEND_KINDS supplies: ``make(**options)`` (a new, unopened store on the
test's database, as a second process would open it) and ``tamper(response_id, **columns)``
(writes raw column values, to simulate corruption or rows from another gateway version);
a backend may name fixtures it needs in ``fixtures``, passed to it by keyword.
"""
from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest

from tests.fixtures.postgres import PostgresBackend
from trtllm_gateway.store import (
    HistoryTooDeep,
    InvalidPageRequest,
    ResponseStore,
    StoreCorrupt,
    StoredResponse,
    StoreError,
    open_store,
)


class SQLiteBackend:
    def __init__(self, tmp_path):
        self.path = tmp_path / "store.db"
        self.url = f"sqlite:///{self.path}"

    def make(self, **options) -> ResponseStore:
        return open_store(self.url, **options)

    async def tamper(self, response_id: str, **columns) -> None:
        def write():
            with sqlite3.connect(self.path) as conn:
                for column, value in columns.items():
                    conn.execute(f"UPDATE responses SET {column} = ? WHERE id = ?", (value, response_id))

        await asyncio.to_thread(write)


BACKEND_KINDS = {"sqlite": SQLiteBackend, "postgres": PostgresBackend}


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


def make_record(rid: str, *, tenant: str = "t1", prev: str | None = None, n_inputs: int = 2,
                created_at: int = 1_700_000_000, status: str = "completed",
                outputs: list[dict] | None = None) -> StoredResponse:
    inputs = [
        {"id": f"{rid}_in{i}", "type": "message", "role": "user",
         "content": [{"type": "input_text", "text": f"question {i} of {rid} ✓"}]}
        for i in range(n_inputs)
    ]
    if outputs is None:
        outputs = [{"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": f"answer of {rid}",
                                 "annotations": [], "logprobs": None}]}]
    response = {"id": rid, "object": "response", "created_at": created_at, "status": status,
                "error": None, "model": "smollm2", "output": outputs,
                "previous_response_id": prev, "usage": None, "metadata": {"k": "v"}}
    return StoredResponse(id=rid, tenant=tenant, created_at=created_at, status=status,
                          response=response, input_items=inputs, previous_response_id=prev)


async def test_save_get_roundtrip_preserves_object_and_key_order(store):
    rec = make_record("resp_a")
    await store.save(rec)
    got = await store.get("resp_a", "t1")
    assert got == rec
    assert list(got.response) == list(rec.response)  # "output" keeps its place


async def test_response_without_output_key_roundtrips(store):
    rec = make_record("resp_q", status="queued")
    del rec.response["output"]
    await store.save(rec)
    got = await store.get("resp_q", "t1")
    assert "output" not in got.response and got.status == "queued"


async def test_replace_updates_state_and_items(store):
    await store.save(make_record("resp_b", status="in_progress", outputs=[], n_inputs=3))
    final = make_record("resp_b", n_inputs=1)
    await store.save(final)
    assert await store.get("resp_b", "t1") == final
    page = await store.list_input_items("resp_b", "t1", order="asc")
    assert [i["id"] for i in page.data] == ["resp_b_in0"]


async def test_get_absent_is_none(store):
    assert await store.get("resp_missing", "t1") is None
    assert await store.list_input_items("resp_missing", "t1") is None
    assert await store.history("resp_missing", "t1") is None
    assert await store.delete("resp_missing", "t1") is False


async def test_tenant_isolation(store):
    await store.save(make_record("resp_c", tenant="alice"))
    assert await store.get("resp_c", "bob") is None
    assert await store.list_input_items("resp_c", "bob") is None
    assert await store.history("resp_c", "bob") is None
    assert await store.delete("resp_c", "bob") is False
    with pytest.raises(StoreError, match="another tenant"):
        await store.save(make_record("resp_c", tenant="bob"))
    assert (await store.get("resp_c", "alice")).tenant == "alice"
    # a chain may not cross tenants: bob's turn on alice's response has no history
    await store.save(make_record("resp_c2", tenant="bob", prev="resp_c"))
    assert await store.history("resp_c2", "bob") is None


async def test_delete_removes_only_that_response(store):
    await store.save(make_record("resp_d1"))
    await store.save(make_record("resp_d2"))
    assert await store.delete("resp_d1", "t1") is True
    assert await store.get("resp_d1", "t1") is None
    assert await store.list_input_items("resp_d1", "t1") is None
    assert await store.delete("resp_d1", "t1") is False
    assert await store.get("resp_d2", "t1") == make_record("resp_d2")


# -- input_items pagination ----------------------------------------------------------
def expected_page(ids, *, after=None, before=None, limit=20, order="desc"):
    """Brute force: the list API read over the whole list in memory."""
    seq = ids if order == "asc" else ids[::-1]
    if (after and after not in seq) or (before and before not in seq):
        return [], False
    lo = seq.index(after) + 1 if after else 0
    hi = seq.index(before) if before else len(seq)
    seq = seq[lo:hi]
    if before and not after:  # the page adjacent to the cursor
        return seq[-limit:], len(seq) > limit
    return seq[:limit], len(seq) > limit


N_ITEMS = 23


@pytest.fixture
async def paged(store):
    await store.save(make_record("resp_p", n_inputs=N_ITEMS))
    return [f"resp_p_in{i}" for i in range(N_ITEMS)]


async def check_page(store, ids, **kw):
    page = await store.list_input_items("resp_p", "t1", **kw)
    want, more = expected_page(ids, **kw)
    got = [i["id"] for i in page.data]
    assert (got, page.has_more) == (want, more), kw
    assert page.first_id == (want[0] if want else None)
    assert page.last_id == (want[-1] if want else None)


async def test_input_items_defaults_desc_20(store, paged):
    page = await store.list_input_items("resp_p", "t1")
    assert [i["id"] for i in page.data] == paged[::-1][:20] and page.has_more
    assert page.data[0]["content"][0]["text"].endswith("✓")


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 3, 20, 23, 100])
async def test_input_items_single_cursor_matches_brute_force(store, paged, order, limit):
    await check_page(store, paged, order=order, limit=limit)
    for cursor in paged + ["no_such_item"]:
        await check_page(store, paged, order=order, limit=limit, after=cursor)
        await check_page(store, paged, order=order, limit=limit, before=cursor)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_input_items_both_cursors_match_brute_force(store, paged, order):
    picks = paged[::4] + [paged[-1]]
    for after, before in itertools.product(picks, repeat=2):
        for limit in (1, 2, 100):
            await check_page(store, paged, order=order, limit=limit, after=after, before=before)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_input_items_walking_pages_visits_every_item_once(store, paged, order):
    seen, after = [], None
    while True:
        page = await store.list_input_items("resp_p", "t1", order=order, limit=5, after=after)
        seen += [i["id"] for i in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert seen == (paged if order == "asc" else paged[::-1])
    # and backwards: from the last item, "before" pages walk to the start, adjacent first
    back, before = [], seen[-1]
    while True:
        page = await store.list_input_items("resp_p", "t1", order=order, limit=5, before=before)
        back = [i["id"] for i in page.data] + back
        if not page.has_more:
            break
        before = page.first_id
    assert back == seen[:-1]


@pytest.mark.parametrize("kw, param", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "5"}, "limit"),
    ({"limit": True}, "limit"), ({"order": "up"}, "order"),
])
async def test_input_items_bad_arguments(store, paged, kw, param):
    with pytest.raises(InvalidPageRequest) as err:
        await store.list_input_items("resp_p", "t1", **kw)
    assert err.value.param == param


# -- history -------------------------------------------------------------------------
def tool_turn(rid: str, prev: str) -> StoredResponse:
    rec = make_record(rid, prev=prev, n_inputs=1, outputs=[
        {"id": f"rs_{rid}", "type": "reasoning", "summary": [], "content": []},
        {"id": f"fc_{rid}", "type": "function_call", "call_id": f"call_{rid}",
         "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}", "status": "completed"},
    ])
    rec.input_items.append({"id": f"fco_{rid}", "type": "function_call_output",
                            "call_id": "call_x", "output": "{}"})
    return rec


def turn_items(rec: StoredResponse) -> list[dict]:
    return rec.input_items + rec.response["output"]


async def test_history_of_three_turn_chain_in_order(store):
    turns = [make_record("resp_h1"), tool_turn("resp_h2", "resp_h1"), make_record("resp_h3", prev="resp_h2")]
    for rec in reversed(turns):  # saving order must not matter
        await store.save(rec)
    assert await store.history("resp_h1", "t1") == turn_items(turns[0])
    assert await store.history("resp_h3", "t1") == [i for t in turns for i in turn_items(t)]


@pytest.mark.parametrize("gone", ["resp_g1", "resp_g2"])
async def test_history_with_deleted_ancestor_is_none(store, gone):
    await store.save(make_record("resp_g1"))
    await store.save(make_record("resp_g2", prev="resp_g1"))
    await store.save(make_record("resp_g3", prev="resp_g2"))
    assert await store.delete(gone, "t1")
    assert await store.history("resp_g3", "t1") is None
    assert (await store.get("resp_g3", "t1")).previous_response_id == "resp_g2"  # row intact


async def test_history_with_never_stored_ancestor_is_none(store):
    await store.save(make_record("resp_orphan", prev="resp_never"))
    assert await store.history("resp_orphan", "t1") is None


async def test_history_depth_bound_and_cycles(backend):
    async with backend.make(max_history_depth=4) as s:
        prev = None
        for i in range(5):
            await s.save(make_record(f"resp_c{i}", prev=prev))
            prev = f"resp_c{i}"
        assert len(await s.history("resp_c3", "t1")) == 4 * 3  # exactly 4 responses: allowed
        with pytest.raises(HistoryTooDeep):
            await s.history("resp_c4", "t1")
        await s.save(make_record("resp_x", prev="resp_y"))
        await s.save(make_record("resp_y", prev="resp_x"))
        with pytest.raises(HistoryTooDeep):
            await s.history("resp_x", "t1")


# -- durability, concurrency, versions, retention ------------------------------------
async def test_reopen_persists(backend):
    rec = tool_turn("resp_r2", "resp_r1")
    async with backend.make() as s:
        await s.save(make_record("resp_r1"))
        await s.save(rec)
    async with backend.make() as s:  # second open: migrations already applied
        assert await s.get("resp_r2", "t1") == rec
        assert len(await s.history("resp_r2", "t1")) == 3 + 4


async def test_concurrent_saves_from_many_tasks_and_two_stores(backend, store):
    other = backend.make()  # a second gateway process on the same database
    await other.open()
    try:
        recs = [make_record(f"resp_{i}", tenant=f"t{i % 3}", n_inputs=i % 4) for i in range(240)]

        async def save_then_read(target, rec):
            await target.save(rec)
            await target.save(rec)  # replace in the middle of other writers
            return await target.get(rec.id, rec.tenant)

        got = await asyncio.gather(*(save_then_read(other if i % 2 else store, r)
                                     for i, r in enumerate(recs)))
        assert got == recs
        assert [await store.get(r.id, r.tenant) for r in recs] == recs
    finally:
        await other.close()


async def test_cancelled_saves_leave_store_usable(store):
    # Cancel saves after a sweep of event-loop turns, so cancellation lands at every stage
    # of a transaction (client disconnects do this to the gateway's handlers).
    for k in range(120):
        task = asyncio.ensure_future(store.save(make_record(f"resp_k{k}")))
        for _ in range(k % 40):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.save(make_record(f"resp_ok{k}"))
        assert await store.get(f"resp_ok{k}", "t1") == make_record(f"resp_ok{k}")


@pytest.mark.parametrize("columns", [
    {"schema_version": 99}, {"schema_version": 0}, {"schema_version": -1},
    {"payload": "{not json"}, {"payload": "[1, 2]"},
])
async def test_unreadable_rows_raise_store_corrupt(backend, store, columns):
    await store.save(make_record("resp_v1"))
    await store.save(make_record("resp_v2", prev="resp_v1"))
    await backend.tamper("resp_v1", **columns)
    with pytest.raises(StoreCorrupt, match="resp_v1"):
        await store.get("resp_v1", "t1")
    with pytest.raises(StoreCorrupt, match="resp_v1"):
        await store.history("resp_v2", "t1")
    if "schema_version" in columns:
        with pytest.raises(StoreCorrupt, match="schema_version"):
            await store.list_input_items("resp_v1", "t1")


async def test_purge_older_than(store):
    for i, ts in enumerate((100, 200, 300)):
        await store.save(make_record(f"resp_t{i}", created_at=ts))
    assert await store.purge_older_than(250) == 2
    assert await store.get("resp_t0", "t1") is None
    assert await store.list_input_items("resp_t1", "t1") is None
    assert (await store.get("resp_t2", "t1")).created_at == 300
    assert await store.purge_older_than(250) == 0
    with pytest.raises(StoreError):
        await store.purge_older_than("yesterday")


async def test_unopened_store_gives_clear_error(backend):
    s = backend.make()
    with pytest.raises(StoreError, match="not open"):
        await s.get("resp_a", "t1")
    await s.close()  # closing an unopened store is harmless
