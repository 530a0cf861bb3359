"""The outbox's merge rule (coalesce.py): order kept, nothing lost, one failure raised."""
from __future__ import annotations

import asyncio

import pytest

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_service.coalesce import Outbox
from trtllm_service.parsing import ParsedDelta
from trtllm_service.parsing.base import ToolCallPiece


def take(box: Outbox) -> list[pb.GenerateResponse]:
    return asyncio.run(box.take())


def test_text_and_ids_of_several_steps_merge_into_one_delta() -> None:
    box = Outbox()
    for n, word in enumerate(("a", "b", "c")):
        box.put(ParsedDelta(text=word), [n], [pb.TokenLogprob(token=word)])
    [message] = take(box)
    assert (message.delta.text, list(message.delta.token_ids)) == ("abc", [0, 1, 2])
    assert [lp.token for lp in message.delta.logprobs] == ["a", "b", "c"]


def test_reasoning_then_text_then_calls_share_a_delta_but_never_go_backwards() -> None:
    box = Outbox()
    box.put(ParsedDelta(reasoning="think"), [], [])
    box.put(ParsedDelta(text="answer"), [], [])
    box.put(ParsedDelta(tool_calls=[ToolCallPiece(0, "call_1", "f", '{"a"')]), [], [])
    box.put(ParsedDelta(tool_calls=[ToolCallPiece(0, arguments_delta=": 1}")]), [], [])
    box.put(ParsedDelta(text="after the call"), [], [])
    box.put(ParsedDelta(reasoning="late reasoning"), [], [])
    first, second, third = (m.delta for m in take(box))
    assert (first.reasoning_text, first.text) == ("think", "answer")
    assert [(c.id, c.name, c.arguments_delta) for c in first.tool_calls] == [("call_1", "f", '{"a": 1}')]
    assert (second.text, second.reasoning_text, third.reasoning_text) == ("after the call", "", "late reasoning")


def test_pieces_of_different_calls_or_with_an_error_stay_apart() -> None:
    box = Outbox()
    box.put(ParsedDelta(tool_calls=[ToolCallPiece(0, "call_1", "f", "{}", error="bad")]), [], [])
    box.put(ParsedDelta(tool_calls=[ToolCallPiece(1, "call_2", "g", "{")]), [], [])
    box.put(ParsedDelta(tool_calls=[ToolCallPiece(1, arguments_delta="}")]), [], [])
    [message] = take(box)
    calls = [(c.index, c.arguments_delta, c.error) for c in message.delta.tool_calls]
    assert calls == [(0, "{}", "bad"), (1, "{}", "")]


def test_the_final_comes_after_pending_output_and_ends_the_stream() -> None:
    box = Outbox()
    box.put(ParsedDelta(text="x"), [], [])
    box.close(pb.GenerateResponse(final=pb.Final(finish_reason=pb.FINISH_REASON_STOP)))
    delta, final = take(box)
    assert delta.delta.text == "x" and final.HasField("final") and box.closed


def test_a_failure_is_raised_after_what_was_pending() -> None:
    box = Outbox()
    box.put(ParsedDelta(text="x"), [], [])
    box.fail(RuntimeError("engine gone"))
    assert [m.delta.text for m in take(box)] == ["x"] and not box.closed
    with pytest.raises(RuntimeError, match="engine gone"):
        take(box)
    assert box.closed


def test_stream_interval_sends_at_each_multiple_of_n_tokens_after_the_first_output() -> None:
    async def scenario() -> None:
        box = Outbox(interval=4)
        box.put(ParsedDelta(text="a"), [1], [])
        assert [m.delta.text for m in await box.take()] == ["a"]  # the first output goes at once
        box.put(ParsedDelta(text="b"), [2], [])
        with pytest.raises(TimeoutError):  # 2 tokens so far: nothing wakes the writer before 4
            await asyncio.wait_for(box.take(), 0.05)
        box.put(ParsedDelta(text="c"), [3], [])
        box.put(ParsedDelta(text="d"), [4], [])
        [message] = await box.take()  # token 4: as TensorRT-LLM's executor at iteration N
        assert (message.delta.text, list(message.delta.token_ids)) == ("bcd", [2, 3, 4])
        box.put(ParsedDelta(text="efgh"), [5, 6, 7, 8], [])  # an executor streaming every 4th iteration
        assert [m.delta.text for m in await box.take()] == ["efgh"]  # relayed at once
        box.put(ParsedDelta(text="i"), [9], [])
        box.close(pb.GenerateResponse(final=pb.Final(finish_reason=pb.FINISH_REASON_STOP)))
        delta, final = await box.take()  # the end goes at once, with what is pending
        assert delta.delta.text == "i" and final.HasField("final") and box.closed
    asyncio.run(scenario())
