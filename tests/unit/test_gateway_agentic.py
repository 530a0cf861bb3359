"""Agentic request fields: validation, translation to the proto, echo, capability checks.

Covers `tools.py`, `output_format.py`, `schemas.py`, `capabilities.py` and the agentic parts
of `request.py`, `translate.py` and `objects.py`. The stream side (function-call errors,
call limits) is in test_gateway_agentic_stream.py.
"""
from __future__ import annotations

import json

import pytest

from trtllm_gateway import capabilities
from trtllm_gateway.errors import ApiError
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.tools import call_limit
from trtllm_gateway.translate import build_chat, generate_request
from trtllm_responses.inference.v1 import inference_pb2 as pb

BASE = {"model": "m", "input": "hi"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}
TIME = {"type": "function", "name": "get_time"}


def _req(**fields):
    return parse_create({**BASE, **fields})


def _err(**fields) -> ApiError:
    with pytest.raises(ApiError) as info:
        _req(**fields)
    return info.value


# ---- validation ------------------------------------------------------------------------

def test_function_tools_are_echoed_in_the_api_shape():
    req = _req(tools=[WEATHER, TIME])
    assert req.tools == [WEATHER, {"type": "function", "name": "get_time", "description": None,
                                   "parameters": None, "strict": None}]
    resp = new_response(req, "resp_1", "m", 0)
    assert resp["tools"] == req.tools and resp["tool_choice"] == "auto"


@pytest.mark.parametrize("tools,param,code", [
    ([{"type": "frobnicate"}], "tools[0].type", "unsupported_parameter"),
    ([{"type": "function", "name": "bad name"}], "tools[0].name", None),
    ([{"type": "function"}], "tools[0].name", None),
    ([{"type": "function", "name": "f", "parameters": {"type": "objekt"}}], "tools[0].parameters", None),
    ([{"type": "function", "name": "f", "parameters": "{}"}], "tools[0].parameters", None),
    ([{"type": "function", "name": "f", "strict": "yes"}], "tools[0].strict", None),
    ([TIME, TIME], "tools[1].name", None),
    ({"type": "function", "name": "f"}, "tools", None),
])
def test_bad_tools_are_400_naming_the_path(tools, param, code):
    err = _err(tools=tools)
    assert (err.status, err.param, err.code) == (400, param, code)


@pytest.mark.parametrize("choice,expected", [
    ("required", "required"),
    ({"type": "function", "name": "get_time"}, {"type": "function", "name": "get_time"}),
    ({"type": "function", "function": {"name": "get_time"}}, {"type": "function", "name": "get_time"}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
     {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}),
])
def test_tool_choice_forms_are_normalised(choice, expected):
    assert _req(tools=[WEATHER, TIME], tool_choice=choice).tool_choice == expected


@pytest.mark.parametrize("fields,param", [
    ({"tool_choice": "required"}, "tool_choice"),  # forcing a call needs tools
    ({"tools": [TIME], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tools": [TIME], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [TIME], "tool_choice": {"type": "file_search"}}, "tool_choice"),  # a hosted tool
    ({"tools": [TIME], "tool_choice": {"type": "frobnicate"}}, "tool_choice.type"),
    ({"tools": [TIME], "tool_choice": {"type": "allowed_tools", "mode": "x", "tools": []}}, "tool_choice.mode"),
    ({"tools": [TIME], "max_tool_calls": 0}, "max_tool_calls"),
])
def test_bad_tool_choice_and_limits_are_400(fields, param):
    err = _err(**fields)
    assert (err.status, err.param) == (400, param)


def test_json_schema_format_is_validated_and_echoed():
    fmt = {"type": "json_schema", "name": "person", "strict": True,
           "schema": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}}
    req = _req(text={"format": fmt})
    assert req.text == {"format": {**fmt, "description": None}, "verbosity": "medium"}
    assert new_response(req, "resp_1", "m", 0)["text"] == req.text


@pytest.mark.parametrize("fmt,param", [
    ({"type": "json_schema", "name": "x", "schema": {"type": 12}}, "text.format.schema"),
    ({"type": "json_schema", "name": "x", "schema": {"properties": {"a": {"minimum": "zero"}}}}, "text.format.schema"),
    ({"type": "json_schema", "name": "x"}, "text.format.schema"),
    ({"type": "json_schema", "schema": {}}, "text.format.name"),
    ({"type": "json_schema", "name": "x", "schema": {}, "strict": 1}, "text.format.strict"),
    ({"type": "yaml"}, "text.format.type"),
])
def test_bad_text_formats_are_400_naming_the_path(fmt, param):
    err = _err(text={"format": fmt})
    assert (err.status, err.kind.type, err.param) == (400, "invalid_request_error", param)


def test_invalid_schema_message_says_why():
    err = _err(text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "objekt"}}})
    assert "not a valid JSON Schema" in err.message and "objekt" in err.message


def test_reasoning_is_validated_and_echoed():
    req = _req(reasoning={"effort": "low", "generate_summary": "auto"})
    assert req.reasoning == {"effort": "low", "summary": "auto"}
    assert new_response(req, "resp_1", "m", 0)["reasoning"] == {"effort": "low", "summary": "auto"}
    assert new_response(_req(), "resp_1", "m", 0)["reasoning"] is None
    assert _err(reasoning={"effort": "extreme"}).param == "reasoning.effort"
    assert _err(reasoning={"summary": "long"}).param == "reasoning.summary"


def test_top_logprobs_alone_turns_logprobs_on():
    assert _req(top_logprobs=3).logprobs and _req(include=["message.output_text.logprobs"]).logprobs
    assert not _req(top_logprobs=0).logprobs and not _req().logprobs


def test_reasoning_encrypted_content_include_is_accepted():
    assert _req(include=["reasoning.encrypted_content"]).include == ["reasoning.encrypted_content"]


# ---- translation -----------------------------------------------------------------------

def _chat(**fields) -> pb.Chat:
    req = _req(**fields)
    return build_chat(req, req.input.items)


def test_tools_and_choice_reach_the_chat():
    chat = _chat(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, max_tool_calls=2)
    assert [t.name for t in chat.tools] == ["get_weather", "get_time"]
    assert json.loads(chat.tools[0].parameters_json) == WEATHER["parameters"]
    assert chat.tools[0].description == "Weather in a city" and chat.tools[0].strict
    assert chat.tools[1].parameters_json == "" and not chat.tools[1].strict
    assert chat.tool_choice.mode == pb.ToolChoice.MODE_REQUIRED
    assert chat.HasField("parallel_tool_calls") and not chat.parallel_tool_calls
    assert chat.max_tool_calls == 2


def test_named_function_and_allowed_tools():
    chat = _chat(tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_time"})
    assert chat.tool_choice.function_name == "get_time" and len(chat.tools) == 2
    chat = _chat(tools=[WEATHER, TIME], tool_choice={"type": "allowed_tools", "mode": "auto",
                                                     "tools": [{"type": "function", "name": "get_weather"}]})
    assert [t.name for t in chat.tools] == ["get_weather"] and chat.tool_choice.mode == pb.ToolChoice.MODE_AUTO


def test_tool_choice_none_shows_the_model_no_tools():
    chat = _chat(tools=[WEATHER], tool_choice="none")
    assert not chat.tools and chat.tool_choice.mode == pb.ToolChoice.MODE_NONE


@pytest.mark.parametrize("effort,sent", [("none", "none"), ("minimal", "low"), ("high", "high"), ("max", "high")])
def test_reasoning_effort_maps_to_the_service_levels(effort, sent):
    assert _chat(reasoning={"effort": effort}).reasoning_effort == sent
    assert not _chat(reasoning={"summary": "auto"}).HasField("reasoning_effort")


def test_text_format_becomes_the_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = _req(text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    out = generate_request(req, build_chat(req, req.input.items), "resp_1")
    fmt = out.response_format.json_schema
    assert (fmt.name, json.loads(fmt.schema_json), fmt.strict) == ("thing", schema, True)
    req = _req(text={"format": {"type": "json_object"}})
    assert generate_request(req, build_chat(req, req.input.items), "r").response_format.json_object
    req = _req()
    assert not generate_request(req, build_chat(req, req.input.items), "r").HasField("response_format")


def test_forced_call_sends_no_response_format():
    req = _req(tools=[TIME], tool_choice="required", text={"format": {"type": "json_object"}})
    assert not generate_request(req, build_chat(req, req.input.items), "r").HasField("response_format")


def test_history_with_calls_and_reasoning_round_trips_into_the_chat():
    req = _req(input=[
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "use the tool"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{not json"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": "noon"}], tools=[WEATHER, TIME])
    chat = build_chat(req, req.input.items)
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "tool"]
    assistant = chat.messages[1]
    assert assistant.reasoning == "use the tool"
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_1", "get_weather", '{"city": "Paris"}'), ("call_2", "get_time", "{not json")]
    assert [(m.tool_call_id, m.content[0].text) for m in chat.messages[2:]] == [("call_1", "sunny"), ("call_2", "noon")]


@pytest.mark.parametrize("choice,parallel,most,limit", [
    ("auto", True, None, None), ("auto", True, 3, 3), ("auto", False, None, 1), ("auto", False, 3, 1),
    ("required", True, 2, 2), ("none", True, None, 0), ({"type": "function", "name": "f"}, True, 5, 1),
])
def test_call_limit(choice, parallel, most, limit):
    assert call_limit(choice, parallel, most) == limit


# ---- capabilities ----------------------------------------------------------------------

def _info(**caps) -> pb.ModelInfo:
    full = dict(tools=True, reasoning=True, structured_output=True, images=True, logprobs=True)
    return pb.ModelInfo(model_id="m", capabilities=pb.Capabilities(**{**full, **caps}))


@pytest.mark.parametrize("missing,fields,param", [
    ("tools", {"tools": [TIME]}, "tools"),
    ("structured_output", {"tools": [TIME], "tool_choice": "required"}, "tool_choice"),
    ("structured_output", {"text": {"format": {"type": "json_object"}}}, "text.format"),
    ("logprobs", {"include": ["message.output_text.logprobs"]}, "include"),
    ("logprobs", {"top_logprobs": 2}, "top_logprobs"),
    ("images", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]}, "input[0].content[0]"),
])
def test_missing_capability_is_400_naming_it(missing, fields, param):
    req = _req(**fields)
    capabilities.check(req, _info())  # fine when the model has it
    with pytest.raises(ApiError) as info:
        capabilities.check(req, _info(**{missing: False}))
    err = info.value
    assert (err.status, err.param) == (400, param) and f"'{missing}'" in err.message


def test_capability_free_requests_pass_a_bare_model():
    bare = _info(tools=False, reasoning=False, structured_output=False, images=False, logprobs=False)
    capabilities.check(_req(reasoning={"effort": "high"}), bare)  # effort is accepted and ignored
    capabilities.check(_req(tools=[TIME], tool_choice="none"), bare)  # no tools offered


def test_replayed_function_call_keeps_its_status():
    items = _req(input=[
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{x", "status": "incomplete",
         "error": {"code": "invalid_tool_call", "message": "not JSON"}},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"}]).input.items
    assert [(i["status"], "error" in i) for i in items] == [("incomplete", False), ("completed", False)]
