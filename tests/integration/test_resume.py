"""Resume for every stored streaming response (beyond OpenAI), and retention of the logs.

A stored ``stream: true`` response logs every event it sends; ``GET /v1/responses/{id}
?stream=true&starting_after=N`` replays the log and follows it live, from any replica,
until the terminal event. A non-background stream whose client leaves is still cancelled
(its engine request aborted), and its log then simply ends. Same scripted-engine stack as
test_background.py.
"""
from __future__ import annotations

import json
import sqlite3
import time

import aiohttp

from tests.fixtures.gateway import check_stream, parse_sse, start_gateway
from tests.integration.test_background import SHORT, final, get, post, replay, text_of, until
from trtllm_gateway.context import GATEWAY
from trtllm_gateway.events import logged
from trtllm_gateway.store import StoredResponse
from trtllm_responses.inference.v1 import inference_pb2 as pb


def _without_comments(text: str) -> str:
    """SSE text without its comment frames (keep-alive pings), which depend on timing."""
    return "".join(b + "\n\n" for b in text.split("\n\n") if b and not b.startswith(":"))


async def _head(resp: aiohttp.ClientResponse, deltas: int) -> list[dict]:
    """Reads SSE frames until ``deltas`` text deltas have arrived."""
    raw, seen = [], 0
    async for line in resp.content:
        raw.append(line.decode())
        if line.startswith(b"event: response.output_text.delta"):
            seen += 1
        if line == b"\n" and seen >= deltas:
            break
    return parse_sse("".join(raw))


async def test_stored_stream_resumes_on_another_replica_while_running(bg):
    body = {"model": "default", "input": "Tell a long story.", "stream": True, "max_output_tokens": 120}
    async with aiohttp.ClientSession() as s:
        async with s.post(bg.worker.base_url + "/responses", json=body) as live:
            head = await _head(live, 5)
            rid, cut = head[0]["response"]["id"], head[-1]["sequence_number"]
            resumed = await replay(bg.front, rid, after=cut)  # another replica, while it runs
            rest = parse_sse((await live.read()).decode())
    original = head + rest
    final_response = check_stream(original)
    assert final_response["status"] == "incomplete"  # max_output_tokens reached
    assert head + resumed == original  # the resumed client misses nothing and gets nothing extra
    assert await replay(bg.front, rid) == original  # a full replay later is the same stream
    assert (await get(bg.front, rid))[1] == final_response


async def test_stored_stream_disconnect_still_cancels_and_its_log_ends(bg):
    body = {"model": "default", "input": "Tell a long story.", "stream": True}
    async with aiohttp.ClientSession() as s:
        live = await s.post(bg.worker.base_url + "/responses", json=body)
        head = await _head(live, 3)
        live.close()  # the client goes away: a non-background response is cancelled
    rid = head[0]["response"]["id"]
    cancelled = await final(bg.front, rid)
    assert cancelled["status"] == "cancelled"

    async def idle():
        return (await bg.stub.GetLoad(pb.GetLoadRequest())).running == 0
    assert await until(idle, timeout=5)
    events = await until(lambda: _complete_replay(bg, rid))
    assert events[:len(head)] == head
    # the log ends consistent: the open message closed incomplete, as the stored copy has it
    assert [e["type"] for e in events[-3:]] == ["response.output_text.done", "response.content_part.done",
                                               "response.output_item.done"]
    assert events[-1]["item"] == cancelled["output"][-1] and events[-1]["item"]["status"] == "incomplete"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def _complete_replay(bg, rid: str):
    page = await bg.front.app[GATEWAY].store.read_events(rid, "", -1, 10_000)
    return None if page.open else await replay(bg.front, rid)


async def test_replay_of_a_finished_stream_is_byte_identical(bg):
    async with aiohttp.ClientSession() as s:  # closed right after the last event
        body = {"model": "default", "input": "Hi.", "stream": True}
        async with s.post(bg.front.base_url + "/responses", json=body) as r:
            original = await r.text()
    rid = parse_sse(original)[0]["response"]["id"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{bg.worker.base_url}/responses/{rid}?stream=true") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            again = await r.text()
    assert _without_comments(again) == _without_comments(original)
    assert text_of(check_stream(parse_sse(again))) == SHORT
    # the writer itself finished the log (the client closing after the last event did not
    # cancel that), not a recovery after its lease: one attempt, done. The row is finished just
    # after the last event is written, so a fast reader can see it still running for a moment.
    async def job_row():
        with sqlite3.connect(bg.db) as conn:
            row = conn.execute("SELECT attempts, state, kind FROM background_jobs WHERE response_id = ?",
                               (rid,)).fetchone()
        return row if row and row[1] != "running" else None

    assert await until(job_row, timeout=10) == (1, "done", "stream")


async def test_starting_after_past_the_end_and_unstored_streams(bg):
    async with aiohttp.ClientSession() as s:
        async with s.post(bg.front.base_url + "/responses",
                          json={"model": "default", "input": "Hi.", "stream": True}) as r:
            events = parse_sse(await r.text())
        rid = events[0]["response"]["id"]
        assert await replay(bg.front, rid, after=len(events) + 5) == []
        async with s.post(bg.front.base_url + "/responses",
                          json={"model": "default", "input": "Hi.", "stream": True, "store": False}) as r:
            unstored = parse_sse(await r.text())[0]["response"]["id"]
    assert (await get(bg.front, unstored, "?stream=true"))[0] == 404


async def test_retention_purges_old_responses_with_their_jobs_and_logs(bg, tmp_path):
    service = bg.worker.app[GATEWAY].settings.service[0]
    handle, runner = await start_gateway(service, tmp_path, store_retention_s=5.0, event_poll_interval_s=0.05)
    try:
        store = handle.app[GATEWAY].store
        _, fresh = await post(handle, {"model": "default", "input": "Keep me.", "background": True})
        await final(handle, fresh["id"])
        old = dict(fresh, id="resp_ancient", created_at=int(time.time()) - 100, status="queued")
        record = StoredResponse(id=old["id"], tenant="", created_at=old["created_at"], status="queued",
                                response=old, input_items=[])
        await store.enqueue_job(record, {"version": 0}, [logged({**_queued(old), "sequence_number": 0})],
                                now_ms=0)

        async def purged():
            return await store.read_events("resp_ancient", "", -1, 10) is None
        assert await until(purged, timeout=10), "the purge task did not run"
        assert (await get(handle, "resp_ancient"))[0] == 404
        assert (await get(handle, fresh["id"]))[1]["status"] == "completed"  # younger than the TTL
        assert await store.claim_jobs("probe", 10, 1000) == []  # no orphaned job row either
    finally:
        await handle.client.close()
        await runner.cleanup()


def _queued(response: dict) -> dict:
    return {"type": "response.queued", "response": json.loads(json.dumps(response))}
