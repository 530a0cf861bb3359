"""Background mode end to end: create, progress, streams, resume, cancel, two replicas.

The "model" is the scripted test engine (a fixed reply, one token every STEP seconds)
behind the real service; everything after it is real: gRPC server, two gateway apps
("worker" runs jobs, "front" runs none) sharing one SQLite store file, as two replicas on
one host would. Dead replicas and lease recovery: test_background_recovery.py.
"""
from __future__ import annotations

import json

import aiohttp
import grpc
import pytest_asyncio

from tests.fixtures.gateway import check_stream, parse_sse, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from tests.fixtures.waiting import until
from trtllm_gateway.context import GATEWAY
from trtllm_gateway.routes.background import RUNNER
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

STEP = 0.02
SHORT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."
LONG = " ".join(f"Sentence number {i} of a long and winding story." for i in range(60))


def scripted_reply(tokenizer):
    def reply(prompt_ids: list[int]) -> str:
        return LONG if "long story" in tokenizer.decode(prompt_ids) else SHORT
    return reply


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bg(tokenizer, tmp_path_factory):
    engine = ScriptedEngine(tokenizer, scripted_reply(tokenizer), model_id="scripted-bg", step_delay=STEP)
    server = await serve_in_process(engine)
    tmp = tmp_path_factory.mktemp("background")
    fast = dict(event_poll_interval_s=0.05, job_lease_s=3.0)
    worker, worker_runner = await start_gateway(server.address, tmp, **fast)
    front, front_runner = await start_gateway(server.address, tmp, background_workers=0, **fast)
    channel = grpc.aio.insecure_channel(server.address)
    yield type("BG", (), {"worker": worker, "front": front, "tokenizer": tokenizer, "db": tmp / "responses.db",
                          "stub": pb_grpc.InferenceServiceStub(channel)})
    await channel.close()
    for handle, runner in ((front, front_runner), (worker, worker_runner)):
        await handle.client.close()
        await runner.cleanup()
    await server.stop()


async def post(handle, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(handle.base_url + "/responses", json=body) as r:
            return r.status, await r.json()


async def get(handle, rid: str, suffix: str = "") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{handle.base_url}/responses/{rid}{suffix}") as r:
            return r.status, await r.json()


async def replay(handle, rid: str, after: int | None = None) -> list[dict]:
    query = "?stream=true" + ("" if after is None else f"&starting_after={after}")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{handle.base_url}/responses/{rid}{query}") as r:
            assert r.status == 200, await r.text()
            return parse_sse(await r.text())


async def status_of(handle, rid: str) -> str:
    return (await get(handle, rid))[1]["status"]


async def final(handle, rid: str) -> dict:
    async def done():
        _, body = await get(handle, rid)
        return body if body["status"] not in ("queued", "in_progress") else None
    return await until(done)


def text_of(response: dict) -> str:
    return "".join(p["text"] for item in response["output"] if item["type"] == "message"
                   for p in item["content"])


async def test_background_create_is_queued_then_runs_on_another_replica(bg):
    status, created = await post(bg.front, {"model": "default", "input": "Tell me something.",
                                            "background": True})
    assert status == 200 and created["status"] == "queued" and created["background"] is True
    assert created["output"] == [] and created["id"].startswith("resp_")
    seen = set()

    async def finished():
        seen.add(await status_of(bg.front, created["id"]))
        return seen & {"completed", "failed", "cancelled", "incomplete"}
    assert await until(finished)
    assert "in_progress" in seen and "completed" in seen, seen
    done = (await get(bg.front, created["id"]))[1]
    assert text_of(done) == SHORT and done["background"] is True and done["usage"]["output_tokens"] > 0
    events = await replay(bg.front, created["id"])
    assert events[0]["type"] == "response.queued" and events[0]["response"]["status"] == "queued"
    assert check_stream(events) == done  # the replay is a valid stream ending in the stored object


async def test_background_stream_starts_queued_and_matches_the_stored_response(bg):
    async with aiohttp.ClientSession() as s:
        body = {"model": "default", "input": "Hello?", "background": True, "stream": True}
        async with s.post(bg.front.base_url + "/responses", json=body) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            events = parse_sse(await r.text())
    assert [e["type"] for e in events[:3]] == ["response.queued", "response.created", "response.in_progress"]
    final_response = check_stream(events)
    assert final_response["status"] == "completed" and text_of(final_response) == SHORT
    assert (await get(bg.worker, final_response["id"]))[1] == final_response


async def test_resume_starting_after_continues_exactly(bg):
    _, created = await post(bg.worker, {"model": "default", "input": "Resume me.", "background": True})
    rid = created["id"]
    first = await bg.front.client.responses.retrieve(rid, stream=True)  # the SDK's own resume call
    head = []
    async for event in first:
        head.append(event.to_dict())
        if event.type == "response.output_text.delta" and len(head) > 8:
            break
    await first.close()  # the reader goes away: the background job does not care
    cut = head[-1]["sequence_number"]
    rest = await replay(bg.front, rid, after=cut)
    assert rest[0]["sequence_number"] == cut + 1
    whole = check_stream(head + rest)
    assert whole["status"] == "completed" and text_of(whole) == SHORT
    assert await replay(bg.worker, rid, after=rest[-1]["sequence_number"]) == []  # nothing after the end
    assert await replay(bg.worker, rid, after=10**22) == []  # past every event (was a 500: BIGINT overflow)


async def running_with_output(handle, rid: str) -> None:
    async def has_delta():
        page = await handle.app[GATEWAY].store.read_events(rid, "", -1, 1000)
        return any(e.type == "response.output_text.delta" for e in page.events)
    assert await until(has_delta)


async def test_cancel_from_another_replica_stops_the_engine_request(bg):
    _, created = await post(bg.front, {"model": "default", "input": "Write a long story.",
                                       "background": True})
    rid = created["id"]
    async with aiohttp.ClientSession() as s:
        follower = await s.get(f"{bg.front.base_url}/responses/{rid}?stream=true")
        await running_with_output(bg.front, rid)
        assert (await bg.stub.GetLoad(pb.GetLoadRequest())).running == 1
        cancelled = await bg.front.client.responses.cancel(rid)
        assert cancelled.status == "cancelled" and cancelled.background is True
        tail = parse_sse((await follower.read()).decode())  # the open follower ends too
    assert [e["type"] for e in tail][-2:] == ["response.content_part.done", "response.output_item.done"]
    assert tail[-1]["item"]["status"] == "incomplete"

    async def idle():
        return (await bg.stub.GetLoad(pb.GetLoadRequest())).running == 0
    assert await until(idle, timeout=5), "the engine request kept running after the cancel"
    stored = (await get(bg.worker, rid))[1]
    assert stored["status"] == "cancelled" and 0 < len(text_of(stored)) < len(LONG)
    again = await bg.worker.client.responses.cancel(rid)  # idempotent, from either replica
    assert again.to_dict() == stored


async def test_cancel_and_background_errors(bg):
    c = bg.front.client
    done = await c.responses.create(model="default", input="Plain.", max_output_tokens=16)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{bg.front.base_url}/responses/{done.id}/cancel") as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["message"] == "Only background responses can be cancelled."
        async with s.post(f"{bg.front.base_url}/responses/resp_nope/cancel") as r:
            assert r.status == 404
    status, body = await post(bg.front, {"model": "default", "input": "x", "background": True, "store": False})
    assert status == 400 and body["error"]["param"] == "background"
    status, body = await get(bg.front, done.id, "?stream=true")
    assert status == 400 and body["error"]["param"] == "stream"
    status, body = await get(bg.front, done.id, "?stream=true&starting_after=soon")
    assert status == 400 and body["error"]["param"] == "starting_after"
    status, _ = await get(bg.front, "resp_nope", "?stream=true")
    assert status == 404


async def test_finished_background_response_is_returned_unchanged_by_cancel(bg):
    _, created = await post(bg.worker, {"model": "default", "input": "Quick.", "background": True})
    done = await final(bg.worker, created["id"])
    assert done["status"] == "completed"
    assert (await bg.front.client.responses.cancel(created["id"])).to_dict() == done


async def test_event_payloads_are_exactly_what_followers_receive(bg):
    _, created = await post(bg.worker, {"model": "default", "input": "Exact.", "background": True})
    await final(bg.worker, created["id"])
    page = await bg.worker.app[GATEWAY].store.read_events(created["id"], "", -1, 1000)
    events = await replay(bg.front, created["id"])
    assert [json.loads(e.payload) for e in page.events] == events
    assert [e.sequence_number for e in page.events] == list(range(len(events)))


async def test_background_turn_of_a_conversation_is_appended_when_it_ends(bg):
    c = bg.front.client
    conv = await c.conversations.create(items=[{"role": "user", "content": "My name is Ada"}])
    created = await c.responses.create(model="default", conversation=conv.id, input="Hello?", background=True)
    assert created.status == "queued"
    done = await final(bg.front, created.id)
    items = [i.to_dict() async for i in c.conversations.items.list(conv.id, order="asc")]
    assert [i["type"] for i in items] == ["message", "message", "message"]
    assert items[1]["content"][0]["text"] == "Hello?"
    assert items[2]["id"] == done["output"][0]["id"] and items[2]["content"][0]["text"] == SHORT


async def test_an_idle_replica_backs_off_its_claim_poll_and_still_takes_queued_jobs(bg, monkeypatch):
    runner, waits = bg.worker.app[RUNNER], []
    next_poll = runner._next_poll

    def spy() -> float:
        waits.append(next_poll())
        return waits[-1]
    monkeypatch.setattr(runner, "_next_poll", spy)
    assert await until(lambda: 1.0 in waits, timeout=10), waits  # a third of the 3 s lease caps the 2 s default
    assert waits[:waits.index(1.0)] == sorted(waits[:waits.index(1.0)])  # slowing down step by step
    status, created = await post(bg.front, {"model": "default", "input": "Tell me something.",
                                            "background": True})  # the front runs no jobs: the worker must
    assert status == 200
    assert (await final(bg.front, created["id"]))["status"] == "completed"
    assert 0.05 in waits[waits.index(1.0):]  # it owned a job: back to --event-poll-interval-s
