"""Create-request validation: unsupported/unknown fields, ranges, metadata, input items."""
from __future__ import annotations

import pytest

from trtllm_gateway.errors import ApiError
from trtllm_gateway.request import UNSUPPORTED, parse_create, parse_json_object

BASE = {"model": "m", "input": "hello"}


def _err(body: dict) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_create(body)
    return info.value


# (field, a value we refuse for now, a default value we accept)
UNSUPPORTED_CASES = [
    ("prompt", {"id": "pmpt_1"}, None),
]


@pytest.mark.parametrize("name,refused,accepted", UNSUPPORTED_CASES, ids=[c[0] for c in UNSUPPORTED_CASES])
def test_unsupported_fields_are_400_naming_the_field(name, refused, accepted):
    err = _err({**BASE, name: refused})
    want = (400, "invalid_request_error", name, "unsupported_parameter")
    assert (err.status, err.kind.type, err.param, err.code) == want
    parse_create({**BASE, name: accepted})  # the default value is harmless


def test_every_unsupported_field_is_covered_by_the_table_test():
    assert "prompt" in UNSUPPORTED
    assert "background" not in UNSUPPORTED  # served since issue 7 (routes/background.py)
    # served since the agentic issue (tests/unit/test_gateway_agentic.py)
    assert not {"tools", "reasoning", "text", "max_tool_calls"} & set(UNSUPPORTED)


def test_background_is_a_boolean():
    assert parse_create({**BASE, "background": True}).background is True
    assert parse_create({**BASE, "background": None}).background is False
    assert _err({**BASE, "background": "yes"}).param == "background"


@pytest.mark.parametrize("choice", [{"type": "function", "name": "f"}, "required"])
def test_forcing_tool_choice_without_tools_is_refused(choice):
    err = _err({**BASE, "tool_choice": choice})
    assert err.param == "tool_choice" and err.status == 400


@pytest.mark.parametrize("include", [["file_search_call.results"], ["web_search_call.action.sources"]])
def test_include_of_hosted_tool_outputs_is_refused_naming_what_is_served(include):
    err = _err({**BASE, "include": include})
    assert err.param == "include" and err.code == "unsupported_parameter"
    assert "'reasoning.encrypted_content'" in err.message and "'message.output_text.logprobs'" in err.message


def test_include_values_served_are_kept():
    both = ["reasoning.encrypted_content", "message.output_text.logprobs"]
    assert parse_create({**BASE, "include": both}).include == both


def test_unknown_top_level_field_is_400():
    err = _err({**BASE, "frobnicate": 1})
    assert (err.status, err.param, err.code) == (400, "frobnicate", "unknown_parameter")


@pytest.mark.parametrize("body,param", [
    ({"model": "m"}, "input"),
    ({"input": "x"}, "model"),
    ({**BASE, "input": 3}, "input"),
    ({**BASE, "temperature": 2.5}, "temperature"),
    ({**BASE, "temperature": "hot"}, "temperature"),
    ({**BASE, "top_p": -0.1}, "top_p"),
    ({**BASE, "top_logprobs": 21}, "top_logprobs"),
    ({**BASE, "max_output_tokens": 15}, "max_output_tokens"),
    ({**BASE, "max_output_tokens": 16.5}, "max_output_tokens"),
    ({**BASE, "max_output_tokens": True}, "max_output_tokens"),
    ({**BASE, "truncation": "sometimes"}, "truncation"),
    ({**BASE, "stream": "yes"}, "stream"),
    ({**BASE, "store": 1}, "store"),
    ({**BASE, "instructions": ["x"]}, "instructions"),
    ({**BASE, "presence_penalty": 3}, "presence_penalty"),
])
def test_wrong_types_and_ranges_name_the_param(body, param):
    err = _err(body)
    assert err.status == 400 and err.param == param and err.kind.type == "invalid_request_error"


def test_valid_request_fills_defaults():
    req = parse_create({**BASE, "temperature": 0, "max_output_tokens": 16, "metadata": {"a": "b"}})
    assert req.temperature == 0.0 and req.top_p == 1.0 and req.max_output_tokens == 16
    assert req.store is True and req.stream is False and req.truncation == "disabled"
    assert req.metadata == {"a": "b"}
    assert req.input.items[0]["content"] == [{"type": "input_text", "text": "hello"}]


def test_nulls_mean_defaults():
    req = parse_create({**BASE, "temperature": None, "tools": None, "metadata": None, "store": None})
    assert req.temperature == 1.0 and req.store is True and req.metadata == {}


@pytest.mark.parametrize("metadata,ok", [
    ({f"k{i}": "v" for i in range(16)}, True),
    ({f"k{i}": "v" for i in range(17)}, False),
    ({"k" * 64: "v"}, True),
    ({"k" * 65: "v"}, False),
    ({"k": "v" * 512}, True),
    ({"k": "v" * 513}, False),
    ({"k": 1}, False),
    (["k"], False),
])
def test_metadata_limits(metadata, ok):
    body = {**BASE, "metadata": metadata}
    if ok:
        assert parse_create(body).metadata == metadata
    else:
        assert _err(body).param == "metadata"


def test_input_items_are_normalised_with_ids():
    req = parse_create({**BASE, "input": [
        {"role": "developer", "content": "be terse"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"type": "reasoning", "id": "rs_given", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
    ]})
    items = req.input.items
    assert [i["id"][:3] for i in items[:3]] == ["msg"] * 3
    assert items[2]["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert items[3]["id"].startswith("fc_") and items[4]["id"].startswith("fco_")
    assert items[5]["id"] == "rs_given"
    assert len({i["id"] for i in items}) == len(items)


@pytest.mark.parametrize("item,param", [
    ({"role": "wizard", "content": "x"}, "input[0].role"),
    ({"role": "user"}, "input[0].content"),
    ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}, "input[0].content[0].type"),
    ({"role": "user", "content": [{"type": "output_text", "text": "x"}]}, "input[0].content[0].type"),
    ({"role": "user", "content": [{"type": "input_text"}]}, "input[0].content[0].text"),
    ({"type": "item_reference", "id": ""}, "input[0].id"),
    ({"type": "item_reference", "id": 7}, "input[0].id"),
    ({"type": "item_reference"}, "input[0].id"),
    ({"type": None, "id": None}, "input[0].id"),
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
    ({"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}, "input[0].content[0].file_id"),
    ("just a string", "input[0]"),
])
def test_bad_input_items_name_their_path(item, param):
    assert _err({**BASE, "input": [item]}).param == param


def test_images_are_collected_for_the_capability_check():
    req = parse_create({**BASE, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]})
    assert req.input.image_params == ["input[0].content[1]"]


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"\xff\xfe", b"null"])
def test_body_must_be_a_json_object(raw):
    with pytest.raises((ApiError, ValueError)):
        parse_json_object(raw)


@pytest.mark.parametrize("raw", [b'{"input": "a\\ud800b"}', b'{"metadata": {"\\udfff": "x"}}',
                                 b'{"input": [{"content": ["\\uDBFF"]}]}'])
def test_lone_surrogate_escape_is_invalid_json(raw):
    with pytest.raises(ApiError) as err:
        parse_json_object(raw)
    assert err.value.kind.status == 400 and "surrogate" in err.value.message


def test_surrogate_pair_escape_is_one_character():
    assert parse_json_object(b'{"input": "\\ud83d\\ude00"}') == {"input": "\U0001F600"}


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "function", "name": f"f{i}"} for i in range(129)]}, "tools"),  # OpenAI's 128
    ({"input": [{"role": "user", "content": "x"}] * 10_001}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}] * 1_001}]}, "input[0].content"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"description": "x" * (1 << 20)}}]},
     "tools[0].parameters"),
])
def test_default_size_limits(fields, param):
    with pytest.raises(ApiError) as info:
        parse_create({"model": "m", "input": "x", **fields})
    assert info.value.status == 400 and info.value.param == param
