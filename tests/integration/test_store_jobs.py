"""Contract tests of the store's jobs and event logs (migration 2), on every backend.

Each test runs on SQLite and on a real PostgreSQL database (the ``backend`` fixture of
test_store.py). "Replicas" are separate store instances opened on the same database, as
separate gateway processes would open it. Time is passed explicitly (``now_ms``), so
lease expiry is tested without sleeping.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.test_store import make_record
from trtllm_gateway.store import JobOwner, LoggedEvent, StoreError

LEASE = 1_000
T0 = 1_700_000_000_000


def ev(seq: int, kind: str = "response.output_text.delta", **extra) -> LoggedEvent:
    return LoggedEvent(seq, kind, json.dumps({"type": kind, "sequence_number": seq, **extra}))


def queued(rid: str, tenant: str = "t1"):
    return make_record(rid, tenant=tenant, status="queued", outputs=[])


@pytest.fixture
async def replicas(backend):
    opened = [backend.make() for _ in range(3)]
    for s in opened:
        await s.open()
    yield opened
    for s in opened:
        await s.close()


async def test_enqueue_claim_once_then_nothing(store):
    await store.enqueue_job(queued("resp_j1"), {"run": 1}, [ev(0, "response.queued")], now_ms=T0)
    got = await store.get("resp_j1", "t1")
    assert got.status == "queued" and got.input_items == queued("resp_j1").input_items
    [job] = await store.claim_jobs("a", 10, LEASE, now_ms=T0)
    assert (job.response_id, job.tenant, job.kind, job.attempt, job.spec, job.cancel_requested) == (
        "resp_j1", "t1", "background", 1, {"run": 1}, False)
    assert await store.claim_jobs("b", 10, LEASE, now_ms=T0 + LEASE - 1) == []
    with pytest.raises(StoreError):
        await store.enqueue_job(queued("resp_j1"), {}, [], now_ms=T0)


async def test_claims_are_oldest_first_and_limited(store):
    for i in range(5):
        await store.enqueue_job(queued(f"resp_o{i}"), {}, [], now_ms=T0 + 10 - i)
    first = await store.claim_jobs("a", 2, LEASE, now_ms=T0 + 20)
    assert {j.response_id for j in first} == {"resp_o4", "resp_o3"}  # the two oldest
    rest = await store.claim_jobs("a", 10, LEASE, now_ms=T0 + 20)
    assert sorted(j.response_id for j in rest) == ["resp_o0", "resp_o1", "resp_o2"]


async def test_racing_replicas_never_claim_one_job_twice(replicas):
    n = 30
    for i in range(n):
        await replicas[0].enqueue_job(queued(f"resp_r{i}"), {}, [], now_ms=T0 + i)

    async def drain(s, name):
        mine = []
        while batch := await s.claim_jobs(name, 3, LEASE, now_ms=T0 + 100):
            mine += [j.response_id for j in batch]
        return mine

    claimed = await asyncio.gather(*(drain(s, f"r{k}") for k, s in enumerate(replicas)))
    flat = [rid for part in claimed for rid in part]
    assert sorted(flat) == sorted(f"resp_r{i}" for i in range(n)) and len(set(flat)) == n


async def test_expired_lease_moves_the_job_and_fences_the_old_owner(replicas):
    a, b, _ = replicas
    await a.enqueue_job(queued("resp_l"), {}, [ev(0, "response.queued")], now_ms=T0)
    [job_a] = await a.claim_jobs("a", 1, LEASE, now_ms=T0)
    old = JobOwner("a", job_a.attempt)
    assert await a.write_job(old, "resp_l", events=[ev(1)])
    assert await b.claim_jobs("b", 1, LEASE, now_ms=T0 + LEASE - 1) == []  # lease still valid
    [job_b] = await b.claim_jobs("b", 1, LEASE, now_ms=T0 + LEASE + 1)
    assert job_b.attempt == 2 and job_b.response_id == "resp_l"
    assert not await a.write_job(old, "resp_l", events=[ev(2)])  # fenced: nothing written
    assert not await a.write_job(old, "resp_l", record=make_record("resp_l"), done=True)
    watch = await a.watch_jobs("a", {"resp_l": 1}, LEASE, now_ms=T0 + LEASE + 2)
    assert watch.lost == {"resp_l"} and watch.cancel == set()
    page = await b.read_events("resp_l", "t1", -1, 100)
    assert [e.sequence_number for e in page.events] == [0, 1] and page.open
    assert (await b.get("resp_l", "t1")).status == "queued"


async def test_renewed_lease_is_not_claimed(replicas):
    a, b, _ = replicas
    await a.enqueue_job(queued("resp_w"), {}, [], now_ms=T0)
    [job] = await a.claim_jobs("a", 1, LEASE, now_ms=T0)
    watch = await a.watch_jobs("a", {"resp_w": job.attempt}, LEASE, now_ms=T0 + 900)
    assert watch.lost == set() and watch.cancel == set()
    assert await b.claim_jobs("b", 1, LEASE, now_ms=T0 + 1500) == []  # renewed to T0+1900
    assert [j.attempt for j in await b.claim_jobs("b", 1, LEASE, now_ms=T0 + 1901)] == [2]


async def test_watch_without_renewal_does_not_extend(store):
    await store.enqueue_job(queued("resp_nr"), {}, [], now_ms=T0)
    await store.claim_jobs("a", 1, LEASE, now_ms=T0)
    assert (await store.watch_jobs("a", {"resp_nr": 1}, None, now_ms=T0 + 900)).lost == set()
    assert [j.attempt for j in await store.claim_jobs("b", 1, LEASE, now_ms=T0 + LEASE + 1)] == [2]
    assert (await store.watch_jobs("a", {}, LEASE)).lost == set()


async def test_write_job_finishes_atomically(store):
    await store.enqueue_job(queued("resp_f"), {}, [ev(0, "response.queued")], now_ms=T0)
    [job] = await store.claim_jobs("a", 1, LEASE, now_ms=T0)
    owner = JobOwner("a", job.attempt)
    final = make_record("resp_f")
    assert await store.write_job(owner, "resp_f", events=[ev(1), ev(2, "response.completed")],
                                 record=final, done=True)
    assert await store.get("resp_f", "t1") == final
    page = await store.read_events("resp_f", "t1", -1, 100)
    assert (page.status, page.last, page.open) == ("completed", 2, False)
    assert [e.type for e in page.events] == ["response.queued", "response.output_text.delta",
                                             "response.completed"]
    assert json.loads(page.events[2].payload)["sequence_number"] == 2
    assert not await store.write_job(owner, "resp_f", events=[ev(3)])  # done: no more writes
    assert await store.claim_jobs("b", 1, LEASE, now_ms=T0 + 10 * LEASE) == []


async def test_append_events_writes_several_logs_each_fenced(replicas):
    a, b, _ = replicas
    owners = {}
    for rid in ("resp_a1", "resp_a2", "resp_a3"):
        await a.enqueue_job(queued(rid), {}, [ev(0, "response.queued")], now_ms=T0)
        [job] = await a.claim_jobs("a", 1, LEASE, now_ms=T0)
        owners[rid] = JobOwner("a", job.attempt)
    await b.claim_jobs("b", 3, LEASE, now_ms=T0 + LEASE + 1)  # every lease expired: all go to b
    owners["resp_a2"] = JobOwner("b", 2)  # ... and b writes resp_a2 alongside a's two stale owners
    bad = LoggedEvent(1, "response.output_text.delta", "\x00")  # no row can hold a NUL
    done = await b.append_events([(owners["resp_a1"], "resp_a1", [ev(1), ev(2)]),
                                  (owners["resp_a2"], "resp_a2", [ev(1), ev(2)]),
                                  (owners["resp_a3"], "resp_a3", [ev(1)])])
    assert (done.lost, done.refused) == ({"resp_a1", "resp_a3"}, set())
    refused = await b.append_events([(owners["resp_a2"], "resp_a2", [bad]), (JobOwner("b", 2), "resp_a3", [ev(1)])])
    assert (refused.lost, refused.refused) == (set(), {"resp_a2"})
    logs = {rid: [e.sequence_number for e in (await b.read_events(rid, "t1", -1, 9)).events] for rid in owners}
    assert logs == {"resp_a1": [0], "resp_a2": [0, 1, 2], "resp_a3": [0, 1]}
    assert (await b.append_events([])).lost == set()


async def test_duplicate_sequence_number_is_refused_whole(store):
    await store.enqueue_job(queued("resp_dup"), {}, [ev(0, "response.queued")], now_ms=T0)
    [job] = await store.claim_jobs("a", 1, LEASE, now_ms=T0)
    with pytest.raises(StoreError):
        await store.write_job(JobOwner("a", job.attempt), "resp_dup", events=[ev(1), ev(0)],
                              record=make_record("resp_dup"))
    assert (await store.read_events("resp_dup", "t1", -1, 10)).last == 0
    assert (await store.get("resp_dup", "t1")).status == "queued"  # rolled back with it


async def test_read_events_cursor_limit_and_tenant(store):
    await store.enqueue_job(queued("resp_e", tenant="alice"), {}, [ev(i) for i in range(7)], now_ms=T0)
    page = await store.read_events("resp_e", "alice", 2, 3)
    assert [e.sequence_number for e in page.events] == [3, 4, 5]
    assert (page.last, page.status, page.open) == (6, "queued", True)
    assert (await store.read_events("resp_e", "alice", 6, 10)).events == []
    assert await store.read_events("resp_e", "bob", -1, 10) is None
    assert await store.read_events("resp_nothing", "alice", -1, 10) is None
    await store.save(make_record("resp_plain", tenant="alice"))
    plain = await store.read_events("resp_plain", "alice", -1, 10)
    assert (plain.last, plain.open, plain.events) == (-1, False, [])


async def test_cancel_of_a_queued_job_claims_it_for_the_canceller(store):
    await store.enqueue_job(queued("resp_cq"), {"x": 1}, [], now_ms=T0)
    result = await store.request_cancel("resp_cq", "t1", "c", LEASE, now_ms=T0)
    assert result.state == "claimed"
    assert (result.job.attempt, result.job.cancel_requested, result.job.spec) == (1, True, {"x": 1})
    assert await store.claim_jobs("a", 1, LEASE, now_ms=T0 + 1) == []
    assert await store.write_job(JobOwner("c", 1), "resp_cq", done=True)
    assert (await store.request_cancel("resp_cq", "t1", "c", LEASE, now_ms=T0)).state == "done"


async def test_cancel_of_a_running_job_flags_it_for_its_owner(store):
    await store.enqueue_job(queued("resp_cr"), {}, [], now_ms=T0)
    [job] = await store.claim_jobs("a", 1, LEASE, now_ms=T0)
    result = await store.request_cancel("resp_cr", "t1", "c", LEASE, now_ms=T0 + 10)
    assert (result.state, result.job) == ("requested", None)
    watch = await store.watch_jobs("a", {"resp_cr": job.attempt}, LEASE, now_ms=T0 + 20)
    assert watch.cancel == {"resp_cr"} and watch.lost == set()
    # idempotent, and once the owner is gone the canceller takes the job over
    assert (await store.request_cancel("resp_cr", "t1", "c", LEASE, now_ms=T0 + 30)).state == "requested"
    late = await store.request_cancel("resp_cr", "t1", "c", LEASE, now_ms=T0 + 20 + LEASE + 1)
    assert late.state == "claimed" and late.job.attempt == 2 and late.job.cancel_requested


async def test_cancel_needs_a_background_job_of_the_tenant(store):
    await store.enqueue_job(queued("resp_ct", tenant="alice"), {}, [], now_ms=T0)
    assert (await store.request_cancel("resp_ct", "bob", "c", LEASE, now_ms=T0)).state == "absent"
    assert (await store.request_cancel("resp_none", "alice", "c", LEASE, now_ms=T0)).state == "absent"
    await store.open_stream(make_record("resp_st", status="in_progress", outputs=[]), "a", LEASE, [])
    assert (await store.request_cancel("resp_st", "t1", "c", LEASE)).state == "absent"


async def test_open_stream_never_overwrites_a_final_save(store):
    final = make_record("resp_s1")
    await store.save(final)  # a short stream's final save landed before its first event write
    owner = await store.open_stream(make_record("resp_s1", status="in_progress", outputs=[]), "a",
                                    LEASE, [ev(0, "response.created")], now_ms=T0)
    assert owner == JobOwner("a", 1)
    assert await store.get("resp_s1", "t1") == final
    assert await store.write_job(owner, "resp_s1", events=[ev(1)], done=True)
    assert [e.sequence_number for e in (await store.read_events("resp_s1", "t1", -1, 9)).events] == [0, 1]


async def test_stream_job_is_recovered_only_after_its_lease(store):
    rec = make_record("resp_s2", status="in_progress", outputs=[])
    owner = await store.open_stream(rec, "a", LEASE, [ev(0, "response.created")], now_ms=T0)
    assert await store.get("resp_s2", "t1") == rec
    assert await store.claim_jobs("b", 5, LEASE, now_ms=T0 + LEASE - 1) == []
    [job] = await store.claim_jobs("b", 5, LEASE, now_ms=T0 + LEASE + 1)
    assert (job.kind, job.attempt, job.spec) == ("stream", 2, {})
    assert not await store.write_job(owner, "resp_s2", events=[ev(1)])


async def test_delete_and_purge_take_jobs_and_events_along(store):
    await store.enqueue_job(queued("resp_d"), {}, [ev(0)], now_ms=T0)
    await store.enqueue_job(make_record("resp_old", status="queued", outputs=[], created_at=100),
                            {}, [ev(0)], now_ms=T0)
    assert await store.delete("resp_d", "t1")
    assert await store.purge_older_than(1000) == 1
    assert await store.read_events("resp_d", "t1", -1, 10) is None
    assert await store.claim_jobs("a", 10, LEASE, now_ms=T0) == []
    # the ids can be used again: nothing of the old rows is left behind
    await store.enqueue_job(queued("resp_d"), {}, [ev(0)], now_ms=T0)
    assert (await store.read_events("resp_d", "t1", -1, 10)).last == 0
