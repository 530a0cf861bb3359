"""The stream side of function calls and reasoning (pure state machine, no I/O).

Malformed calls keep their raw arguments and carry the `error` extension with status
`incomplete`; calls past the turn's limit are dropped; the streamed items equal the final
output (checked by `check_stream` on real SSE frames).
"""
from __future__ import annotations

from openai.types.responses import Response

from tests.fixtures.gateway import check_stream, parse_sse
from trtllm_gateway import sse
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.streaming import INVALID_CALL, StreamState, finalize, on_delta, start
from trtllm_gateway.tools import call_rules
from trtllm_responses.inference.v1 import inference_pb2 as pb

TOOLS = [{"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_time"}]


def _state(**body) -> StreamState:
    req = parse_create({"model": "m", "input": "hi", "tools": TOOLS, **body})
    return StreamState(new_response(req, "resp_test", "m", 1700000000), logprobs=req.logprobs, **call_rules(req))


def _run(st: StreamState, deltas: list[pb.Delta], reason: int = pb.FINISH_REASON_TOOL_CALLS):
    events = start(st)
    for delta in deltas:
        events += on_delta(st, delta)
    resp, closing = finalize(st, pb.Final(finish_reason=reason, usage=pb.Usage(prompt_tokens=3, completion_tokens=9)))
    events += closing
    body = b"".join(sse.frame(dict(e, sequence_number=i)) for i, e in enumerate(events)).decode()
    events = parse_sse(body)
    assert check_stream(events) == resp
    return resp, events


def _call(index: int, args: str, name: str = "", error: str = "") -> pb.Delta:
    first = pb.ToolCallDelta(index=index, id=f"call_{index}", name=name, arguments_delta=args, error=error) \
        if name else pb.ToolCallDelta(index=index, arguments_delta=args, error=error)
    return pb.Delta(tool_calls=[first])


def test_text_then_call_are_separate_items_with_stable_ids():
    resp, events = _run(_state(), [pb.Delta(text="Checking."), _call(0, '{"city": ', "get_weather"),
                                   _call(0, '"Paris"}')])
    message, call = resp["output"]
    assert message["content"][0]["text"] == "Checking." and message["status"] == "completed"
    assert call == {"id": call["id"], "type": "function_call", "status": "completed", "call_id": "call_0",
                    "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert call["id"].startswith("fc_")
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city": ', '"Paris"}']
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == 1)
    assert added["item"]["arguments"] == "" and added["item"]["status"] == "in_progress"
    assert Response.model_validate(resp).output[1].arguments == '{"city": "Paris"}'


def test_call_flagged_by_the_service_is_incomplete_with_the_raw_arguments():
    resp, events = _run(_state(), [_call(0, '{"city": Par', "get_weather"),
                                   _call(0, "is}", error="arguments are not valid JSON")])
    (call,) = resp["output"]
    assert call["status"] == "incomplete" and call["arguments"] == '{"city": Paris}'
    assert call["error"] == {"code": INVALID_CALL, "message": "arguments are not valid JSON"}
    assert resp["status"] == "completed"  # the response itself did finish
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city": Paris}'


def test_unknown_function_flagged_on_the_first_piece():
    resp, _ = _run(_state(), [_call(0, '{}', "launch_rockets", error="unknown function 'launch_rockets'")])
    assert resp["output"][0]["status"] == "incomplete"
    assert "launch_rockets" in resp["output"][0]["error"]["message"]


def test_gateway_catches_what_the_service_let_through():
    resp, _ = _run(_state(), [_call(0, '[1, 2]', "get_time"), _call(1, '{}', "get_date"), _call(2, "{}", "get_time")])
    bad_args, bad_name, good = resp["output"]
    assert bad_args["error"]["message"] == "the arguments are not a JSON object"
    assert "get_date" in bad_name["error"]["message"] and bad_name["status"] == "incomplete"
    assert "error" not in good and good["status"] == "completed"


def test_parallel_tool_calls_false_keeps_only_the_first_call():
    resp, events = _run(_state(parallel_tool_calls=False), [_call(0, "{}", "get_time"), _call(1, "{}", "get_weather")])
    assert [item["name"] for item in resp["output"]] == ["get_time"]
    assert sum(e["type"] == "response.output_item.added" for e in events) == 1


def test_max_tool_calls_drops_the_calls_past_the_limit():
    deltas = [_call(i, "{}", "get_time") for i in range(4)]
    resp, _ = _run(_state(max_tool_calls=2), deltas)
    assert [item["call_id"] for item in resp["output"]] == ["call_0", "call_1"]


def test_cut_off_call_is_incomplete():
    resp, _ = _run(_state(), [_call(0, '{"city": "Pa', "get_weather")], reason=pb.FINISH_REASON_LENGTH)
    assert resp["status"] == "incomplete" and resp["output"][0]["status"] == "incomplete"
    assert resp["output"][0]["error"]["code"] == INVALID_CALL  # not JSON: flagged even without the service


def test_reasoning_then_answer_counts_reasoning_tokens():
    st = _state()
    events = start(st) + on_delta(st, pb.Delta(reasoning_text="hmm")) + on_delta(st, pb.Delta(text="4"))
    final = pb.Final(finish_reason=pb.FINISH_REASON_STOP,
                     usage=pb.Usage(prompt_tokens=3, completion_tokens=5, reasoning_tokens=3))
    resp, closing = finalize(st, final)
    assert [i["type"] for i in resp["output"]] == ["reasoning", "message"]
    assert resp["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    types = [e["type"] for e in events + closing]
    assert types.index("response.reasoning_text.done") < types.index("response.output_text.delta")
