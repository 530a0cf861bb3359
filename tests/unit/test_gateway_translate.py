"""Translation of Responses input items to the service's Chat, sampling and truncation."""
from __future__ import annotations

import pytest

from trtllm_gateway.errors import ApiError
from trtllm_gateway.request import parse_create
from trtllm_gateway.translate import chat_messages, fit_context, sampling
from trtllm_responses.inference.v1 import inference_pb2 as pb


def _items(input_):
    return parse_create({"model": "m", "input": input_}).input.items


def _view(messages):
    return [(m.role, [p.text if p.HasField("text") else f"<img {p.image.url}>" for p in m.content],
             [(c.id, c.name, c.arguments) for c in m.tool_calls], m.tool_call_id, m.reasoning) for m in messages]


def test_string_input_with_instructions_first():
    msgs = chat_messages("Be brief.", _items("hi"))
    assert _view(msgs) == [("system", ["Be brief."], [], "", ""), ("user", ["hi"], [], "", "")]


def test_roles_parts_and_images():
    msgs = chat_messages(None, _items([
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        {"role": "assistant",
         "content": [{"type": "output_text", "text": "a cat"}, {"type": "refusal", "refusal": "no"}]},
    ]))
    assert _view(msgs) == [
        ("developer", ["dev"], [], "", ""),
        ("user", ["look", "<img https://x/y.png>"], [], "", ""),
        ("assistant", ["a cat", "no"], [], "", ""),
    ]
    assert msgs[1].content[1].image.detail == "low"


def test_function_calls_attach_to_the_assistant_turn_and_outputs_become_tool_messages():
    msgs = chat_messages(None, _items([
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "need a tool"}]},
        {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": '{"c":"P"}'},
        {"type": "function_call", "call_id": "call_2", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
        {"role": "assistant", "content": "Sunny at noon."},
    ]))
    assert _view(msgs) == [
        ("user", ["weather?"], [], "", ""),
        ("assistant", [], [("call_1", "w", '{"c":"P"}'), ("call_2", "t", "{}")], "", "need a tool"),
        ("tool", ["sunny"], [], "call_1", ""),
        ("tool", ["noon"], [], "call_2", ""),
        ("assistant", ["Sunny at noon."], [], "", ""),
    ]


def test_function_call_after_assistant_text_joins_that_message():
    msgs = chat_messages(None, _items([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]))
    assert len(msgs) == 2 and msgs[1].tool_calls[0].id == "c" and msgs[1].content[0].text == "Let me check."


def test_history_items_precede_new_input_and_old_instructions_are_absent():
    history = _items([{"role": "user", "content": "turn 1"}]) + [
        {"id": "msg_out", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "answer 1", "annotations": []}]}]
    msgs = chat_messages("new instructions", history + _items("turn 2"))
    assert [(m.role, m.content[0].text) for m in msgs] == [
        ("system", "new instructions"), ("user", "turn 1"), ("assistant", "answer 1"), ("user", "turn 2")]


def test_only_system_messages_is_400():
    with pytest.raises(ApiError) as info:
        chat_messages("sys", _items([{"role": "developer", "content": "x"}]))
    assert info.value.param == "input"


def test_sampling_from_request():
    req = parse_create({"model": "m", "input": "x", "temperature": 0, "top_p": 0.5, "max_output_tokens": 32,
                        "include": ["message.output_text.logprobs"], "top_logprobs": 3})
    params = sampling(req)
    assert params.temperature == 0 and params.HasField("temperature")
    assert params.top_p == 0.5 and params.max_tokens == 32
    assert params.logprobs and params.top_logprobs == 3
    plain = sampling(parse_create({"model": "m", "input": "x"}))
    assert not plain.HasField("max_tokens") and not plain.HasField("logprobs")


def _chat(*turns: str) -> pb.Chat:
    msgs = [pb.ChatMessage(role="system", content=[pb.ContentPart(text="sys")])]
    for i, text in enumerate(turns):
        msgs.append(pb.ChatMessage(role="user", content=[pb.ContentPart(text=text)]))
        msgs.append(pb.ChatMessage(role="assistant", content=[pb.ContentPart(text=f"a{i}")]))
    msgs.pop()  # the last turn is the new user message
    return pb.Chat(messages=msgs)


def _counter(context: int):
    calls = []

    async def count(chat: pb.Chat):  # 10 "tokens" per message
        calls.append(len(chat.messages))
        return 10 * len(chat.messages), context
    return count, calls


async def test_fit_context_keeps_everything_when_it_fits():
    count, calls = _counter(1000)
    chat = _chat("u1", "u2", "u3")
    assert await fit_context(chat, count, reserve=100) is chat
    assert calls == [6]


async def test_fit_context_drops_oldest_turns_but_keeps_system_and_last_user():
    count, _ = _counter(60)
    out = await fit_context(_chat("u1", "u2", "u3", "u4"), count, reserve=20)  # budget 40 tokens = 4 messages
    texts = [m.content[0].text for m in out.messages]
    assert texts == ["sys", "u3", "a2", "u4"]


async def test_fit_context_fails_when_even_the_last_turn_does_not_fit():
    count, _ = _counter(25)
    with pytest.raises(ApiError) as info:
        await fit_context(_chat("u1", "u2"), count, reserve=10)
    assert info.value.code == "context_length_exceeded" and info.value.status == 400


def test_schemas_travel_as_utf8_not_ascii_escapes():
    """Escaped, each emoji costs 12 bytes instead of 4 and can push a request over the gRPC limit."""
    from trtllm_gateway.translate import build_chat, generate_request

    schema = {"type": "object", "description": "\U0001F600 é"}
    req = parse_create({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": schema}],
                        "text": {"format": {"type": "json_schema", "name": "o", "schema": schema}}})
    out = generate_request(req, build_chat(req, req.input.items), "resp_1")
    assert "\U0001F600 é" in out.chat.tools[0].parameters_json
    assert "\U0001F600 é" in out.response_format.json_schema.schema_json
    assert "\\u" not in out.chat.tools[0].parameters_json + out.response_format.json_schema.schema_json
