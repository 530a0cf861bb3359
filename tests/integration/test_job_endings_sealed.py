"""Reasoning items that a job ending closes carry ``encrypted_content`` when the request asked.

A replica that died mid-reasoning leaves an open reasoning item in the event log; the
replica that recovers the job ends it ``failed`` (or ``cancelled``) from the log
(``job_endings.py``). For a background job the request's ``include`` comes from its create
body (the job spec), for a stored stream from the spec its log was opened with
(``events.response_log``). The stack is test_background_recovery's: a front gateway that
runs no jobs, a dead claim played in the store, a worker started afterwards.
"""
from __future__ import annotations

from tests.fixtures.gateway import check_stream
from tests.integration.test_background import final, get, post, replay
from tests.integration.test_background_recovery import DEAD_LEASE_MS, dead_claim, lonely, worker  # noqa: F401
from trtllm_gateway import reasoning_crypto
from trtllm_gateway.context import GATEWAY
from trtllm_gateway.events import logged
from trtllm_gateway.store import JobOwner, StoredResponse

INCLUDE = ["reasoning.encrypted_content"]
THOUGHT = "Let me think about the orphaned job."


def half_reasoning(snap: dict, first_seq: int) -> list[dict]:
    """The log of a response whose replica died inside its reasoning item."""
    item = {"id": "rs_half", "type": "reasoning", "status": "in_progress", "summary": [], "content": []}
    events = [
        {"type": "response.created", "response": snap}, {"type": "response.in_progress", "response": snap},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.reasoning_text.delta", "item_id": "rs_half", "output_index": 0, "content_index": 0,
         "delta": THOUGHT},
    ]
    return [dict(e, sequence_number=first_seq + i) for i, e in enumerate(events)]


def opened(resp: dict) -> str:
    """The reasoning item's encrypted content, opened with the (process-wide, unset) key."""
    [item] = [i for i in resp["output"] if i["type"] == "reasoning"]
    assert item["status"] == "incomplete" and item["content"][0]["text"] == THOUGHT
    return reasoning_crypto.keyring(()).open(item["encrypted_content"], "")


async def test_a_background_job_failed_mid_reasoning_seals_its_reasoning(lonely):  # noqa: F811
    status, created = await post(lonely, {"model": "default", "input": "Think.", "background": True,
                                          "include": INCLUDE})
    assert status == 200
    rid = created["id"]
    job = await dead_claim(lonely, rid)
    snap = dict((await get(lonely, rid))[1], status="in_progress")
    store = lonely.app[GATEWAY].store
    assert await store.write_job(JobOwner("dead", job.attempt), rid,
                                 events=[logged(e) for e in half_reasoning(snap, 1)])
    async with worker(lonely):
        failed = await final(lonely, rid)
    assert failed["status"] == "failed" and opened(failed) == THOUGHT
    assert check_stream(await replay(lonely, rid)) == failed


async def test_a_background_job_without_the_include_gets_no_encrypted_content(lonely):  # noqa: F811
    status, created = await post(lonely, {"model": "default", "input": "Think.", "background": True})
    rid = created["id"]
    job = await dead_claim(lonely, rid)
    snap = dict((await get(lonely, rid))[1], status="in_progress")
    await lonely.app[GATEWAY].store.write_job(JobOwner("dead", job.attempt), rid,
                                             events=[logged(e) for e in half_reasoning(snap, 1)])
    async with worker(lonely):
        failed = await final(lonely, rid)
    assert failed["status"] == "failed" and "encrypted_content" not in failed["output"][0]


async def test_a_stored_stream_of_a_dead_replica_seals_the_reasoning_it_closes(lonely):  # noqa: F811
    status, created = await post(lonely, {"model": "default", "input": "A template.", "background": True})
    template = (await get(lonely, created["id"]))[1]
    await lonely.client.responses.cancel(created["id"])
    snap = dict(template, id="resp_deadreasoning", status="in_progress", background=False)
    record = StoredResponse(id=snap["id"], tenant="", created_at=snap["created_at"], status="in_progress",
                            response=snap, input_items=[])
    # the spec events.response_log opens a stored stream's log with
    await lonely.app[GATEWAY].store.open_stream(record, "dead", DEAD_LEASE_MS,
                                                [logged(e) for e in half_reasoning(snap, 0)],
                                                spec={"body": {"include": INCLUDE}})
    async with worker(lonely):
        failed = await final(lonely, snap["id"])
    assert failed["status"] == "failed" and opened(failed) == THOUGHT
    assert check_stream(await replay(lonely, snap["id"])) == failed


async def test_a_stored_stream_opens_its_log_with_the_include_its_ending_needs(lonely):  # noqa: F811
    import sqlite3

    from tests.fixtures.gateway import raw_stream

    async with worker(lonely) as live:  # the front runs no jobs, but it streams: either will do
        status, _, resp = await raw_stream(live, {"model": "default", "input": "Stream me.", "include": INCLUDE})
    assert status == 200
    with sqlite3.connect(lonely.tmp / "responses.db") as db:
        [(kind, spec)] = db.execute("SELECT kind, spec FROM background_jobs WHERE response_id = ?",
                                    (resp["id"],)).fetchall()
    assert kind == "stream" and '"include":["reasoning.encrypted_content"]' in spec.replace(" ", "")
