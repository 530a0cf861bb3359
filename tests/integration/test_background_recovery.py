"""Jobs of a replica that died: lease expiry, re-run or clean failure, attempts, cancel.

A "front" gateway that runs no jobs takes the creates, so nothing claims them; a dead
replica is then played by claiming the job straight in the store under another name, with
a short lease, and never running it (what a SIGKILLed gateway leaves behind). A worker
gateway started afterwards on the same SQLite file must recover the job.
"""
from __future__ import annotations

import asyncio
import contextlib

import pytest_asyncio

from tests.fixtures.gateway import check_stream, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from tests.integration.test_background import SHORT, STEP, final, get, post, replay, scripted_reply, text_of
from trtllm_gateway.context import GATEWAY
from trtllm_gateway.events import logged
from trtllm_gateway.store import JobOwner

DEAD_LEASE_MS = 150
FAST = dict(event_poll_interval_s=0.05, job_lease_s=3.0, job_max_attempts=3)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lonely(tokenizer, tmp_path_factory):
    engine = ScriptedEngine(tokenizer, scripted_reply(tokenizer), model_id="scripted-recovery", step_delay=STEP)
    server = await serve_in_process(engine)
    tmp = tmp_path_factory.mktemp("recovery")
    front, runner = await start_gateway(server.address, tmp, background_workers=0, **FAST)
    front.tmp, front.service = tmp, server.address
    yield front
    await front.client.close()
    await runner.cleanup()
    await server.stop()


@contextlib.asynccontextmanager
async def worker(front):
    """A replica that runs jobs, started now on the front's store."""
    handle, runner = await start_gateway(front.service, front.tmp, **FAST)
    try:
        yield handle
    finally:
        await handle.client.close()
        await runner.cleanup()


async def dead_claim(front, rid: str):
    """Claim ``rid`` as a replica that dies at once; wait until its short lease lapses."""
    await asyncio.sleep(DEAD_LEASE_MS / 1000 + 0.05)  # any earlier dead claim has lapsed
    [job] = await front.app[GATEWAY].store.claim_jobs("dead", 1, DEAD_LEASE_MS)
    assert job.response_id == rid
    return job


async def queued(front, text: str) -> str:
    status, created = await post(front, {"model": "default", "input": text, "background": True})
    assert status == 200 and created["status"] == "queued"
    return created["id"]


async def test_a_job_nobody_runs_stays_queued_and_cancel_ends_it_at_once(lonely):
    rid = await queued(lonely, "Nobody runs me.")
    await asyncio.sleep(0.3)
    assert (await get(lonely, rid))[1]["status"] == "queued"
    cancelled = (await lonely.client.responses.cancel(rid)).to_dict()
    assert cancelled["status"] == "cancelled" and cancelled["output"] == []
    assert [e["type"] for e in await replay(lonely, rid)] == ["response.queued"]  # the log just ends


async def test_job_of_a_dead_replica_without_output_is_rerun(lonely):
    rid = await queued(lonely, "Run me twice.")
    assert (await dead_claim(lonely, rid)).attempt == 1
    async with worker(lonely):
        done = await final(lonely, rid)
    assert done["status"] == "completed" and text_of(done) == SHORT
    assert check_stream(await replay(lonely, rid)) == done


async def test_job_of_a_dead_replica_with_output_fails_cleanly(lonely):
    rid = await queued(lonely, "Half done.")
    job = await dead_claim(lonely, rid)
    snap = dict((await get(lonely, rid))[1], status="in_progress")
    item = {"id": "msg_half", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    half = [
        {"type": "response.created", "response": snap}, {"type": "response.in_progress", "response": snap},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_half", "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
        {"type": "response.output_text.delta", "item_id": "msg_half", "output_index": 0, "content_index": 0,
         "delta": "Half a", "logprobs": []},
    ]
    for seq, event in enumerate(half, start=1):
        event["sequence_number"] = seq
    store = lonely.app[GATEWAY].store
    assert await store.write_job(JobOwner("dead", job.attempt), rid, events=[logged(e) for e in half])
    async with worker(lonely):
        failed = await final(lonely, rid)
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "stopped mid-generation" in failed["error"]["message"]
    assert failed["output"][0]["id"] == "msg_half" and failed["output"][0]["status"] == "incomplete"
    assert text_of(failed) == "Half a"
    assert check_stream(await replay(lonely, rid)) == failed


async def test_job_is_failed_after_too_many_attempts(lonely):
    rid = await queued(lonely, "Cursed.")
    limit = FAST["job_max_attempts"]
    for attempt in range(1, limit + 1):  # dead replicas, each before writing anything
        assert (await dead_claim(lonely, rid)).attempt == attempt
    async with worker(lonely):
        failed = await final(lonely, rid)
    assert failed["status"] == "failed" and f"{limit} attempts" in failed["error"]["message"]
    events = await replay(lonely, rid)
    assert [e["type"] for e in events] == ["response.queued", "response.created", "response.in_progress",
                                           "response.failed"]
    assert check_stream(events) == failed


async def test_cancel_reaches_a_job_whose_replica_died(lonely):
    rid = await queued(lonely, "Orphan.")
    await dead_claim(lonely, rid)  # running, owner gone: the cancel takes it over after the lease
    cancelled = (await lonely.client.responses.cancel(rid)).to_dict()
    assert cancelled["status"] == "cancelled"
    assert (await get(lonely, rid))[1] == cancelled


async def test_stored_stream_of_a_dead_replica_is_closed_as_failed(lonely):
    store = lonely.app[GATEWAY].store
    rid = await queued(lonely, "A stream template.")  # only to borrow a realistic response object
    template = (await get(lonely, rid))[1]
    await lonely.client.responses.cancel(rid)
    from trtllm_gateway.store import StoredResponse

    snap = dict(template, id="resp_deadstream", status="in_progress", background=False)
    record = StoredResponse(id=snap["id"], tenant="", created_at=snap["created_at"], status="in_progress",
                            response=snap, input_items=[])
    opening = [{"type": "response.created", "response": snap, "sequence_number": 0},
               {"type": "response.in_progress", "response": snap, "sequence_number": 1}]
    await store.open_stream(record, "dead", DEAD_LEASE_MS, [logged(e) for e in opening])
    async with worker(lonely):
        failed = await final(lonely, snap["id"])
    assert failed["status"] == "failed" and "stopped before the response finished" in failed["error"]["message"]
    events = await replay(lonely, snap["id"])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert check_stream(events) == failed
