"""The batched event-log writer (event_log.py) on a real SQLite store.

Logs of one replica are written together (``store.append_events``), each log in order; a
log's ``finish`` takes what is still queued into its fenced final write; a job lost to
another replica gets nothing more written, and its owner is told (JobLost).
"""
from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.waiting import until
from tests.integration.test_store import make_record
from trtllm_gateway.event_log import EventLog, JobLost
from trtllm_gateway.events import LogHub
from trtllm_gateway.settings import GatewaySettings
from trtllm_gateway.store import JobOwner, open_store


def deltas(rid: str, first: int, n: int) -> list[dict]:
    return [{"type": "response.output_text.delta", "item_id": f"msg_{rid}", "output_index": 0, "content_index": 0,
             "delta": f"{rid} {i}", "logprobs": [], "sequence_number": i} for i in range(first, first + n)]


@pytest.fixture
async def hub(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/logs.db")
    await store.open()
    yield LogHub(store, GatewaySettings(event_poll_interval_s=0.05))
    await store.close()


async def running_log(hub: LogHub, rid: str) -> EventLog:
    await hub.store.enqueue_job(make_record(rid, status="queued", outputs=[]), {}, [])
    [job] = await hub.store.claim_jobs(hub.replica, 1, hub.lease_ms)
    return EventLog(hub, rid, owner=JobOwner(hub.replica, job.attempt))


async def logged(hub: LogHub, rid: str) -> list[dict]:
    page = await hub.store.read_events(rid, "t1", -1, 1000)
    return [json.loads(e.payload) for e in page.events]


async def test_logs_are_written_together_in_order_and_finish_takes_the_rest(hub):
    a, b = await running_log(hub, "resp_ba"), await running_log(hub, "resp_bb")
    a.add(deltas("a", 0, 3))
    b.add(deltas("b", 0, 2))
    a.add(deltas("a", 3, 2))  # queued behind the batch already asked for

    async def written():
        return len(await logged(hub, "resp_ba")) == 5 and len(await logged(hub, "resp_bb")) == 2
    assert await until(written, timeout=10)
    b.add(deltas("b", 2, 3))
    closing = [{"type": "response.completed", "response": {"id": "resp_bb"}, "sequence_number": 5}]
    await b.finish(closing, record=make_record("resp_bb"), done=True)  # at once: the queued three with it
    assert [e["sequence_number"] for e in await logged(hub, "resp_ba")] == [0, 1, 2, 3, 4]
    events = await logged(hub, "resp_bb")
    assert [e["sequence_number"] for e in events] == [0, 1, 2, 3, 4, 5]
    assert [e["delta"] for e in events[:5]] == [f"b {i}" for i in range(5)] and events[5] == closing[0]
    page = await hub.store.read_events("resp_bb", "t1", -1, 10)
    assert (page.open, page.status) == (False, "completed")


async def _grew(hub: LogHub, rid: str, n: int) -> bool:
    return len(await logged(hub, rid)) > n


async def test_a_job_lost_to_another_replica_gets_nothing_more(hub):
    lost, kept = await running_log(hub, "resp_bl"), await running_log(hub, "resp_bk")
    lost.add(deltas("l", 0, 2))
    kept.add(deltas("k", 0, 1))

    async def first_batch():
        return await logged(hub, "resp_bl") and await logged(hub, "resp_bk")
    assert await until(first_batch, timeout=10)
    later = int(time.time() * 1000) + 10 * hub.lease_ms  # resp_bk's lease renewed, resp_bl's expired:
    await hub.store.watch_jobs(hub.replica, {"resp_bk": 1}, hub.lease_ms, now_ms=later)
    [job] = await hub.store.claim_jobs("other", 5, hub.lease_ms, now_ms=later + 1)  # another replica takes it
    assert job.response_id == "resp_bl" and job.attempt == 2
    lost.add(deltas("l", 2, 2))
    kept.add(deltas("k", 1, 2))  # written in the same batch as the refused one
    assert await until(lambda: _grew(hub, "resp_bk", 2), timeout=10)
    assert await until(lambda: lost.lost, timeout=10)
    with pytest.raises(JobLost):
        await lost.finish([], record=make_record("resp_bl"), done=True)
    assert [e["sequence_number"] for e in await logged(hub, "resp_bl")] == [0, 1]
    assert [e["sequence_number"] for e in await logged(hub, "resp_bk")] == [0, 1, 2]


async def test_a_failed_batch_keeps_its_events_for_the_next_write(hub, caplog):
    elog = await running_log(hub, "resp_bf")
    await hub.store.close()  # every write fails with StoreError meanwhile
    elog.add(deltas("f", 0, 3))

    async def warned():
        return any("could not log events" in r.getMessage() for r in caplog.records)
    assert await until(warned, timeout=10)
    await hub.store.open()
    elog.add(deltas("f", 3, 1))
    await elog.finish([], record=make_record("resp_bf"), done=True)
    assert [e["sequence_number"] for e in await logged(hub, "resp_bf")] == [0, 1, 2, 3]
