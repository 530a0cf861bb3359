"""Ending a job from its event log, and replaying finished responses (pure, no I/O)."""
from __future__ import annotations

import copy

from openai.types.responses import Response

from tests.fixtures.gateway import check_stream
from trtllm_gateway import job_endings
from trtllm_gateway.idempotency import replay_events
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.streaming import StreamState, finalize, on_delta, start
from trtllm_responses.inference.v1 import inference_pb2 as pb

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def _state() -> StreamState:
    req = parse_create({"model": "m", "input": "hi", "tools": TOOLS})
    return StreamState(new_response(req, "resp_job", "m", 1700000000))


def _numbered(events: list[dict], first: int = 0) -> list[dict]:
    return [dict(e, sequence_number=first + i) for i, e in enumerate(events)]


def _partial() -> tuple[StreamState, list[dict]]:
    """A live state part-way through: reasoning done, a message open with two pieces."""
    st = _state()
    events = start(st)
    for delta in (pb.Delta(reasoning_text="think"), pb.Delta(text="Hel"), pb.Delta(text="lo")):
        events += on_delta(st, delta)
    return st, _numbered(events)


def test_restore_rebuilds_the_live_state_from_its_log():
    live, logged = _partial()
    rebuilt = _state()
    job_endings.restore(rebuilt, logged)
    assert finalize(rebuilt, error="x", now=1) == finalize(copy.deepcopy(live), error="x", now=1)


def test_cancelled_closes_what_the_log_left_open():
    _, logged = _partial()
    resp, closing = job_endings.cancelled(_state(), logged)
    assert resp["status"] == "cancelled" and resp["error"] is None
    assert [e["type"] for e in closing][-1] == "response.output_item.done"
    assert closing[-1]["item"]["content"][0]["text"] == "Hello" and closing[-1]["item"]["status"] == "incomplete"
    check_stream(_numbered(logged + closing + [{"type": "response.failed", "response": dict(
        resp, status="failed", error={"code": "server_error", "message": "x"})}]))
    Response.model_validate(resp)


def test_failed_adds_a_missing_opening_and_ends_with_response_failed():
    st = _state()
    resp, events = job_endings.failed(st, [], job_endings.MESSAGES["stream"], [])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert resp["status"] == "failed" and resp["error"]["message"] == job_endings.MESSAGES["stream"]
    check_stream(_numbered(events))


def test_failed_after_logged_output_keeps_it_and_numbers_continue():
    _, logged = _partial()
    resp, events = job_endings.failed(_state(), logged, "stopped", logged)
    assert events[0]["type"] == "response.output_text.done"  # the opening is already logged
    stream = logged + _numbered(events, first=len(logged))
    final = check_stream(stream)
    assert final == resp and [i["type"] for i in resp["output"]] == ["reasoning", "message"]


def test_settled_appends_only_a_missing_terminal_event():
    st = _state()
    events = start(st) + on_delta(st, pb.Delta(text="ok"))
    resp, closing = finalize(st, pb.Final(finish_reason=pb.FINISH_REASON_STOP))
    assert job_endings.settled(resp, events) == [{"type": "response.completed", "response": resp}]
    assert job_endings.settled(resp, events + closing) == []
    assert job_endings.settled(dict(resp, status="cancelled"), events) == []


def test_has_output_and_missing_opening():
    st, logged = _partial()
    assert job_endings.has_output(logged) and not job_endings.has_output(logged[:2])
    assert job_endings.missing_opening(st, logged[:1]) == [start(_state())[1]]


def test_replay_of_a_finished_response_is_a_valid_stream_with_the_same_result():
    st = _state()
    events = start(st)
    for delta in (pb.Delta(reasoning_text="hmm"), pb.Delta(text="It is "), pb.Delta(text="sunny."),
                  pb.Delta(tool_calls=[pb.ToolCallDelta(index=0, id="call_1", name="get_weather",
                                                        arguments_delta='{"city": "Paris"}')])):
        events += on_delta(st, delta)
    resp, closing = finalize(st, pb.Final(finish_reason=pb.FINISH_REASON_TOOL_CALLS))
    original = check_stream(_numbered(events + closing))
    replayed = replay_events(resp, "openai")
    assert check_stream(_numbered(replayed)) == original
    assert [e["type"] for e in replayed if "delta" not in e["type"]] == \
        [e["type"] for e in events + closing if "delta" not in e["type"]]


def _summarized() -> StreamState:
    req = parse_create({"model": "m", "input": "hi", "reasoning": {"summary": "auto"}})
    return StreamState(new_response(req, "resp_sum", "m", 1700000000))


def test_a_job_ends_an_open_summary_part_as_the_live_stream_would():
    live = _summarized()
    logged = start(live)
    for delta in (pb.Delta(reasoning_text="thinking "), pb.Delta(reasoning_text="on")):
        logged += on_delta(live, delta)
    logged = _numbered(logged)
    rebuilt = _summarized()  # as background.py rebuilds it: from the stored response alone
    resp, events = job_endings.failed(rebuilt, logged, "stopped", logged)
    assert [e["type"] for e in events] == [
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done", "response.failed"]
    assert events[1]["status"] == "incomplete"
    final = check_stream(logged + _numbered(events, first=len(logged)))
    assert final == resp and resp["output"][0]["summary"] == [{"type": "summary_text", "text": "thinking on"}]
    assert finalize(copy.deepcopy(live), error="stopped", now=1)[0]["output"] == resp["output"]


def test_replay_of_a_summarized_response_streams_the_same_summary_events():
    st = _summarized()
    events = start(st)
    for delta in (pb.Delta(reasoning_text="a "), pb.Delta(reasoning_text="b"), pb.Delta(text="done")):
        events += on_delta(st, delta)
    resp, closing = finalize(st, pb.Final(finish_reason=pb.FINISH_REASON_STOP))
    resp["output"][0]["encrypted_content"] = "opaque"  # carried over as stored, never re-sealed
    replayed = replay_events(resp, "openai")
    assert check_stream(_numbered(replayed)) == resp
    assert [e["type"] for e in replayed if "delta" not in e["type"]] == \
        [e["type"] for e in events + closing if "delta" not in e["type"]]
    assert next(e for e in replayed if e["type"] == "response.reasoning_summary_text.delta")["delta"] == "a b"


KEYS = ("k1:" + "s" * 32,)
ENCRYPTED = {"body": {"include": ["reasoning.encrypted_content"]}}


def _open_reasoning_log() -> list[dict]:
    live = _state()
    return _numbered(start(live) + on_delta(live, pb.Delta(reasoning_text="secret thought")))


def test_a_job_ending_seals_the_reasoning_it_closes_when_the_request_asked():
    from trtllm_gateway import reasoning_crypto

    logged = _open_reasoning_log()
    for ending in (lambda st: job_endings.failed(st, logged, "stopped", logged),
                   lambda st: job_endings.cancelled(st, logged)):
        rebuilt = _state()
        rebuilt.seal = job_endings.sealer(KEYS, "tenant-a", ENCRYPTED)
        resp, closing = ending(rebuilt)
        [item] = resp["output"]
        assert item["status"] == "incomplete" and item["content"][0]["text"] == "secret thought"
        assert reasoning_crypto.keyring(KEYS).open(item["encrypted_content"], "tenant-a") == "secret thought"
        assert next(e for e in closing if e["type"] == "response.output_item.done")["item"] == item
    # not asked (a stream's spec of old: {}), or asked for something else: no encrypted_content
    for spec in ({}, {"body": {"include": ["message.output_text.logprobs"]}}):
        assert job_endings.sealer(KEYS, "tenant-a", spec) is None


def test_an_item_finished_before_generation_is_announced_and_restored():
    """A compaction item: announced by start (added, done), restored whole from the log."""
    cmp_item = {"id": "cmp_1", "type": "compaction", "encrypted_content": "trtllm-compaction.v1.e30="}
    live = _state()
    live.output.append(cmp_item)
    live.before = 1
    opening = start(live)
    assert [e["type"] for e in opening[2:]] == ["response.output_item.added", "response.output_item.done"]
    assert job_endings.missing_opening(live, opening[:1]) == opening[1:]  # a replay needs them all
    logged = _numbered(opening + on_delta(live, pb.Delta(text="Hel")))
    resp, events = job_endings.failed(_state(), logged, "stopped", logged)
    assert [i["type"] for i in resp["output"]] == ["compaction", "message"] and resp["output"][0] == cmp_item
    assert check_stream(logged + _numbered(events, first=len(logged))) == resp


def test_a_live_state_failed_by_its_runner_adds_no_second_opening():
    live, logged = _partial()  # the runner logged the opening itself; its state is live (nothing to replay)
    resp, events = job_endings.failed(live, logged[:1], "stopped", [])
    assert [e["type"] for e in events] == ["response.output_text.done", "response.content_part.done",
                                           "response.output_item.done", "response.failed"]
