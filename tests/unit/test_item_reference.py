"""``item_reference`` input items: parsed as placeholders, resolved to stored items.

``input_items.resolve`` is given what the store's ``find_items`` returns (its contract is
tests/integration/test_store_items.py; the gateway end to end is
tests/integration/test_item_reference.py).
"""
from __future__ import annotations

import pytest

from trtllm_gateway.errors import ApiError
from trtllm_gateway.input_items import normalize_input, resolve
from trtllm_gateway.request import parse_create
from trtllm_gateway.settings import GatewaySettings

BASE = {"model": "m"}
STORED = {
    "msg_a": {"id": "msg_a", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]},
    "rs_a": {"id": "rs_a", "type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}],
             "content": [], "encrypted_content": "rsn1.k1.x", "status": "completed"},
    "msg_img": {"id": "msg_img", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}]},
}


def _input(*items) -> list:
    return [{"role": "user", "content": "first"}, *items, {"role": "user", "content": "next"}]


def test_a_create_keeps_references_as_placeholders_with_or_without_type():
    req = parse_create({**BASE, "input": _input({"type": "item_reference", "id": "rs_a"}, {"id": "msg_a"},
                                                {"type": None, "id": "msg_b"})})
    assert req.input.references == [1, 2, 3]
    assert req.input.items[1:4] == [{"type": "item_reference", "id": i} for i in ("rs_a", "msg_a", "msg_b")]


def test_an_object_with_more_than_an_id_is_no_reference():
    with pytest.raises(ApiError) as err:
        parse_create({**BASE, "input": [{"id": "msg_a", "content": "x"}]})
    assert err.value.param == "input[0].role"


def test_elsewhere_references_are_refused_as_before():
    with pytest.raises(ApiError) as err:
        normalize_input([{"type": "item_reference", "id": "msg_a"}])
    assert err.value.param == "input[0].type" and err.value.code == "unsupported_parameter"


def test_resolve_puts_the_stored_items_in_place_as_input_items():
    norm = normalize_input(_input({"type": "item_reference", "id": "rs_a"}, {"id": "msg_a"}), references=True)
    resolve(norm, STORED)
    assert [i["type"] for i in norm.items] == ["message", "reasoning", "message", "message"]
    assert norm.items[1] == {"id": "rs_a", "type": "reasoning", "summary": STORED["rs_a"]["summary"],
                             "content": [], "encrypted_content": "rsn1.k1.x"}
    assert norm.items[2]["id"] == "msg_a" and norm.items[2]["role"] == "assistant"
    assert norm.items[2]["content"] == [{"type": "output_text", "text": "hi", "annotations": []}]
    assert norm.references == [] and norm.stored == {1, 2}
    resolve(norm, {})  # nothing left to resolve
    assert norm.items[1]["id"] == "rs_a"


def test_an_unknown_id_is_400_naming_the_item():
    norm = normalize_input(_input({"id": "msg_a"}, {"id": "msg_gone"}), references=True)
    with pytest.raises(ApiError) as err:
        resolve(norm, STORED)
    assert err.value.status == 400 and err.value.kind.type == "invalid_request_error"
    assert err.value.param == "input[2]" and err.value.message == "Item with id 'msg_gone' not found."


def test_a_referenced_image_is_collected_for_the_capability_check():
    norm = normalize_input(_input({"id": "msg_img"}), references=True)
    resolve(norm, STORED)
    assert norm.image_params == ["input[1].content[0]"]


@pytest.mark.parametrize("items", [
    [{"id": "msg_a"}, {"id": "msg_a"}],
    [{"role": "assistant", "content": "hi", "id": "msg_a"}, {"id": "msg_a"}],
])
def test_a_reference_may_not_repeat_an_item_of_the_input(items):
    with pytest.raises(ApiError) as err:  # refused as parsed, before any store lookup
        normalize_input(items, references=True)
    assert err.value.status == 400 and err.value.param == "input[1]" and "msg_a" in err.value.message
    assert "item_reference" in err.value.message


def test_two_inline_items_with_one_id_are_400_not_a_failed_save():
    items = [{"role": "user", "content": "a", "id": "msg_x"}, {"role": "user", "content": "b", "id": "msg_x"}]
    with pytest.raises(ApiError) as err:
        normalize_input(items)
    assert err.value.status == 400 and err.value.param == "input[1]"
    assert "Duplicate item id 'msg_x'" in err.value.message and "item_reference" not in err.value.message


def test_the_resolved_items_count_against_the_limits():
    parts = {"id": "msg_many", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": str(n)} for n in range(3)]}
    limits = GatewaySettings(max_input_items=4, max_content_parts=3)
    norm = normalize_input([{"id": "msg_many"}, {"id": "msg_many2"}], limits, references=True)
    with pytest.raises(ApiError) as err:
        resolve(norm, {"msg_many": parts, "msg_many2": dict(parts, id="msg_many2")}, limits)
    assert err.value.param == "input" and "content parts" in err.value.message


def test_a_stored_item_that_is_no_input_is_400():
    norm = normalize_input([{"id": "ws_1"}], references=True)
    with pytest.raises(ApiError) as err:
        resolve(norm, {"ws_1": {"id": "ws_1", "type": "web_search_call", "status": "completed"}})
    assert err.value.param == "input[0]" and "web_search_call" in err.value.message
