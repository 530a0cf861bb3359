"""The streaming state machine: event sequences, item ids, terminal states (pure, no I/O)."""
from __future__ import annotations

import json

import pytest
from openai.types.responses import Response

from tests.fixtures.gateway import check_stream, parse_sse
from trtllm_gateway import sse
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.streaming import StreamState, finalize, on_delta, start
from trtllm_responses.inference.v1 import inference_pb2 as pb

TEXT_SEQUENCE = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done",
]


def _state(**body) -> StreamState:
    req = parse_create({"model": "m", "input": "hi", **body})
    return StreamState(new_response(req, "resp_test", "m", 1700000000), logprobs=req.logprobs)


def _run(st: StreamState, deltas: list[pb.Delta], final: pb.Final | None, error: str | None = None):
    events = start(st)
    for delta in deltas:
        events += on_delta(st, delta)
    resp, closing = finalize(st, final, error=error, now=1700000001)
    events += closing
    # number them exactly as sse.py does, through real frames
    body = b"".join(sse.frame(dict(e, sequence_number=i)) for i, e in enumerate(events)).decode()
    return resp, parse_sse(body)


def _final(reason: int, prompt: int = 5, completion: int = 2, **kw) -> pb.Final:
    return pb.Final(finish_reason=reason, usage=pb.Usage(prompt_tokens=prompt, completion_tokens=completion), **kw)


def test_text_message_sequence_and_final_response():
    resp, events = _run(_state(), [pb.Delta(text="Hel"), pb.Delta(text="lo")], _final(pb.FINISH_REASON_STOP))
    assert [e["type"] for e in events] == TEXT_SEQUENCE + ["response.completed"]
    final = check_stream(events)
    assert final == resp
    assert resp["status"] == "completed" and resp["completed_at"] == 1700000001
    assert resp["usage"] == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
    parsed = Response.model_validate(resp)
    assert parsed.output_text == "Hello"
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all(d["logprobs"] == [] for d in deltas)
    assert resp["output"][0]["id"].startswith("msg_")


def test_created_snapshot_is_in_progress_and_empty():
    _, events = _run(_state(), [pb.Delta(text="x")], _final(pb.FINISH_REASON_STOP))
    for event in events[:2]:
        assert event["response"]["status"] == "in_progress" and event["response"]["output"] == []
        assert event["response"]["usage"] is None


def test_length_gives_incomplete_with_partial_output():
    resp, events = _run(_state(max_output_tokens=16), [pb.Delta(text="partial")], _final(pb.FINISH_REASON_LENGTH))
    assert events[-1]["type"] == "response.incomplete"
    check_stream(events)
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["completed_at"] is None
    assert resp["output"][0]["status"] == "incomplete"
    assert resp["output"][0]["content"][0]["text"] == "partial"


def test_error_final_gives_failed_with_error_and_partial_output():
    resp, events = _run(_state(), [pb.Delta(text="abc")],
                        _final(pb.FINISH_REASON_ERROR, error_message="engine exploded"))
    assert events[-1]["type"] == "response.failed"
    check_stream(events)
    assert resp["status"] == "failed"
    assert resp["error"] == {"code": "server_error", "message": "engine exploded"}
    assert resp["output"][0]["content"][0]["text"] == "abc"


def test_rpc_failure_without_final_gives_failed():
    resp, events = _run(_state(), [pb.Delta(text="abc")], None, error="the inference service went away")
    assert events[-1]["type"] == "response.failed"
    check_stream(events)
    assert resp["usage"] is None and resp["error"]["message"] == "the inference service went away"


def test_cancelled_closes_open_items_without_a_terminal_event():
    st = _state()
    start(st)
    on_delta(st, pb.Delta(text="abc"))
    resp, events = finalize(st, cancelled=True)
    assert [e["type"] for e in events] == ["response.output_text.done", "response.content_part.done",
                                           "response.output_item.done"]
    assert events[0]["text"] == "abc" and events[-1]["item"]["status"] == "incomplete"
    assert resp["status"] == "cancelled" and resp["error"] is None
    assert resp["output"] == [events[-1]["item"]]
    Response.model_validate(resp)


@pytest.mark.parametrize("outcomes", [{}, {"error": "x", "cancelled": True},
                                      {"final": pb.Final(), "error": "x"}])
def test_finalize_takes_exactly_one_outcome(outcomes):
    with pytest.raises(ValueError):
        finalize(_state(), **outcomes)


def test_service_side_cancel_is_failed_for_the_client():
    resp, events = _run(_state(), [pb.Delta(text="a")], _final(pb.FINISH_REASON_CANCELLED))
    assert events[-1]["type"] == "response.failed" and resp["error"]["code"] == "server_error"


def test_reasoning_then_text_then_tool_calls():
    deltas = [
        pb.Delta(reasoning_text="think "), pb.Delta(reasoning_text="hard"),
        pb.Delta(text="Calling."),
        pb.Delta(tool_calls=[pb.ToolCallDelta(index=0, id="call_a", name="get_weather", arguments_delta='{"ci')]),
        pb.Delta(tool_calls=[pb.ToolCallDelta(index=1, id="call_b", name="get_time", arguments_delta="{}"),
                             pb.ToolCallDelta(index=0, arguments_delta='ty": "Paris"}')]),
    ]
    resp, events = _run(_state(), deltas, _final(pb.FINISH_REASON_TOOL_CALLS))
    final = check_stream(events)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    reasoning, message, call_a, call_b = final["output"]
    assert reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think hard"}]
    assert message["content"][0]["text"] == "Calling."
    assert call_a["id"].startswith("fc_") and call_a["call_id"] == "call_a" and call_a["name"] == "get_weather"
    assert json.loads(call_a["arguments"]) == {"city": "Paris"}
    assert call_b["call_id"] == "call_b" and call_b["arguments"] == "{}"
    types = [e["type"] for e in events]
    # the reasoning item closes before the message opens; output indices follow output order
    assert types.index("response.reasoning_text.done") < types.index("response.content_part.added")
    arg_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["output_index"] for e in arg_done] == [2, 3]
    Response.model_validate(resp)


def test_item_ids_identical_in_added_delta_done_and_final():
    resp, events = _run(_state(), [pb.Delta(reasoning_text="r"), pb.Delta(text="t")], _final(pb.FINISH_REASON_STOP))
    ids_by_index: dict[int, set[str]] = {}
    for e in events:
        if "output_index" in e:
            ids_by_index.setdefault(e["output_index"], set()).add(e.get("item_id") or e["item"]["id"])
    assert all(len(ids) == 1 for ids in ids_by_index.values())
    assert [ids_by_index[i].pop() for i in sorted(ids_by_index)] == [item["id"] for item in resp["output"]]


def test_empty_delta_emits_nothing_and_no_output_is_valid():
    st = _state()
    start(st)
    assert on_delta(st, pb.Delta(token_ids=[1, 2])) == []
    resp, events = finalize(st, _final(pb.FINISH_REASON_STOP, completion=0))
    assert [e["type"] for e in events] == ["response.completed"]
    assert resp["output"] == []


def test_logprobs_flow_into_deltas_and_final_content():
    lp = pb.TokenLogprob(token="Hi", logprob=-0.5, bytes=b"Hi",
                         top_logprobs=[pb.TopLogprob(token="Hi", logprob=-0.5, bytes=b"Hi")])
    resp, events = _run(_state(include=["message.output_text.logprobs"], top_logprobs=1),
                        [pb.Delta(text="Hi", logprobs=[lp])], _final(pb.FINISH_REASON_STOP))
    check_stream(events)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [{"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}]
    content = resp["output"][0]["content"][0]
    assert content["logprobs"][0]["bytes"] == list(b"Hi")


def test_open_responses_dialect_renames_reasoning_events():
    st = _state()
    st.dialect = "open_responses"
    events = start(st) + on_delta(st, pb.Delta(reasoning_text="x"))
    events += finalize(st, _final(pb.FINISH_REASON_STOP))[1]
    types = [e["type"] for e in events]
    assert "response.reasoning.delta" in types and "response.reasoning.done" in types
    assert not any(t.startswith("response.reasoning_text") for t in types)


@pytest.mark.parametrize("reason,status", [
    (pb.FINISH_REASON_STOP, "completed"), (pb.FINISH_REASON_TOOL_CALLS, "completed"),
    (pb.FINISH_REASON_LENGTH, "incomplete"), (pb.FINISH_REASON_ERROR, "failed"),
    (pb.FINISH_REASON_CANCELLED, "failed"),
])
def test_finish_reason_table(reason, status):
    resp, events = _run(_state(), [pb.Delta(text="x")], _final(reason))
    assert resp["status"] == status
    assert events[-1]["type"] == f"response.{status}"
    Response.model_validate(resp)


SUMMARY_SEQUENCE = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
    "response.reasoning_summary_part.done", "response.output_item.done",
]


@pytest.mark.parametrize("summary", ["auto", "concise", "detailed"])
def test_reasoning_summary_streams_the_reasoning_text_once_as_summary_part_0(summary):
    resp, events = _run(_state(reasoning={"summary": summary}),
                        [pb.Delta(reasoning_text="think "), pb.Delta(reasoning_text="hard"), pb.Delta(text="ok")],
                        _final(pb.FINISH_REASON_STOP))
    final = check_stream(events)  # the SDK's event types, and the text on one channel only
    types = [e["type"] for e in events]
    assert types[:len(SUMMARY_SEQUENCE)] == SUMMARY_SEQUENCE
    assert not any(t.startswith(("response.reasoning_text", "response.reasoning.")) for t in types)
    reasoning = final["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "think hard"}]
    assert reasoning["content"] == [] and "encrypted_content" not in reasoning
    part_done = events[types.index("response.reasoning_summary_part.done")]
    assert part_done["summary_index"] == 0 and "status" not in part_done
    assert part_done["part"] == {"type": "summary_text", "text": "think hard"}
    assert Response.model_validate(resp).output[0].summary[0].text == "think hard"


def test_without_summary_the_reasoning_is_raw_text_only():
    _, events = _run(_state(reasoning={"effort": "high"}), [pb.Delta(reasoning_text="r")],
                     _final(pb.FINISH_REASON_STOP))
    final = check_stream(events)
    assert not any("summary" in e["type"] for e in events)
    assert final["output"][0]["summary"] == [] and final["output"][0]["content"][0]["text"] == "r"


def test_a_summary_part_cut_short_is_marked_incomplete():
    resp, events = _run(_state(reasoning={"summary": "auto"}, max_output_tokens=16), [pb.Delta(reasoning_text="hm")],
                        _final(pb.FINISH_REASON_LENGTH))
    check_stream(events)
    part_done = next(e for e in events if e["type"] == "response.reasoning_summary_part.done")
    assert part_done["status"] == "incomplete"
    assert resp["output"][0]["status"] == "incomplete" and resp["output"][0]["summary"][0]["text"] == "hm"


def test_seal_puts_encrypted_content_on_the_finished_reasoning_item_only():
    st = _state(reasoning={"summary": "auto"})
    st.seal = lambda text: f"sealed({text})"
    resp, events = _run(st, [pb.Delta(reasoning_text="secret"), pb.Delta(text="ok")], _final(pb.FINISH_REASON_STOP))
    check_stream(events)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert "encrypted_content" not in added["item"]
    assert resp["output"][0]["encrypted_content"] == "sealed(secret)"
    assert "encrypted_content" not in resp["output"][1]  # only reasoning items are sealed


def test_the_stream_checker_refuses_reasoning_streamed_twice():
    _, events = _run(_state(reasoning={"summary": "auto"}), [pb.Delta(reasoning_text="x")],
                     _final(pb.FINISH_REASON_STOP))
    at = [e["type"] for e in events].index("response.reasoning_summary_part.done")
    ref = {"item_id": events[at]["item_id"], "output_index": 0, "content_index": 0}
    doubled = events[:at] + [{"type": "response.reasoning_text.delta", **ref, "delta": "x"},
                             {"type": "response.reasoning_text.done", **ref, "text": "x"}] + events[at:]
    with pytest.raises(AssertionError, match="streamed twice|repeat"):
        check_stream([dict(e, sequence_number=i) for i, e in enumerate(doubled)])
