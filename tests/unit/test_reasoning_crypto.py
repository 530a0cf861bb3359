"""Encrypted reasoning content: sealing, opening, tenant binding, rotation (pure, no I/O)."""
from __future__ import annotations

import base64

import pytest

from trtllm_gateway import reasoning_crypto as rc
from trtllm_gateway.errors import ApiError
from trtllm_gateway.settings import parse_settings

OLD = "old:" + "o" * 32
NEW = "new:" + "n" * 40


def _ring(*specs: str) -> rc.Keyring:
    return rc.keyring(tuple(specs))


def _flip(token: str, at: int) -> str:
    """``token`` with one byte of its binary body changed (nonce, ciphertext or tag)."""
    head, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[at] ^= 1
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def test_round_trip_and_the_format():
    ring = _ring(OLD)
    token = ring.seal("I think, therefore ✓", "tenant-a")
    assert token.startswith("rsn1.old.") and "=" not in token
    assert ring.open(token, "tenant-a") == "I think, therefore ✓"
    assert ring.seal("same", "tenant-a") != ring.seal("same", "tenant-a")  # a fresh nonce every time


def test_another_tenant_cannot_open_it():
    token = _ring(OLD).seal("mine", "tenant-a")
    with pytest.raises(rc.SealError, match="another API key"):
        _ring(OLD).open(token, "tenant-b")


@pytest.mark.parametrize("at", [0, 11, 12, -1])  # nonce start/end, first ciphertext byte, tag end
def test_any_changed_byte_fails_authentication(at):
    ring = _ring(OLD)
    with pytest.raises(rc.SealError, match="failed authentication"):
        ring.open(_flip(ring.seal("text", "t"), at), "t")


@pytest.mark.parametrize("token,reason", [
    ("gAAAAABl-not-ours", "not encrypted content issued by this server"),
    ("rsn1..AAAA", "not encrypted content issued by this server"),
    ("rsn1.other.AAAA", "key 'other', which this server does not hold"),
    ("rsn1.old.AAAA", "failed authentication"),        # too short for a nonce and a tag
    ("rsn1.old.@@@@", "failed authentication"),        # not base64url
])
def test_malformed_and_foreign_content_is_refused_with_a_reason(token, reason):
    with pytest.raises(rc.SealError, match=reason):
        _ring(OLD).open(token, "t")


def test_rotation_the_first_key_seals_every_key_opens():
    sealed_by_old = _ring(OLD).seal("before", "t")
    rotated = _ring(NEW, OLD)
    assert rotated.open(sealed_by_old, "t") == "before"
    sealed_by_new = rotated.seal("after", "t")
    assert sealed_by_new.startswith("rsn1.new.")
    with pytest.raises(rc.SealError, match="does not hold"):
        _ring(OLD).open(sealed_by_new, "t")
    with pytest.raises(rc.SealError, match="failed authentication"):  # same id, another secret
        _ring("old:" + "x" * 32).open(sealed_by_old, "t")


def test_without_a_configured_key_one_random_key_serves_the_process(caplog):
    rc.keyring.cache_clear()
    with caplog.at_level("WARNING", logger="trtllm_gateway.reasoning_crypto"):
        ring = rc.keyring(())
        assert rc.keyring(()) is ring
    assert "another gateway replica" in caplog.text and caplog.text.count("no --reasoning-key") == 1
    assert ring.primary.startswith("process-") and ring.open(ring.seal("x", "t"), "t") == "x"


@pytest.mark.parametrize("value,message", [
    ("k1", "must be 'id:secret'"),
    ("bad id:" + "s" * 32, "must be 'id:secret'"),
    ("k1:short", "at least 32 characters"),
    (f"k1:{'a' * 32},k1:{'b' * 32}", "listed twice"),
])
def test_bad_reasoning_keys_stop_startup(value, message, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--reasoning-key", value])
    assert message in capsys.readouterr().err


def test_settings_take_several_keys_in_order():
    settings = parse_settings([], env={"TRTLLM_GATEWAY_REASONING_KEY": f"{NEW},{OLD}"})
    assert settings.reasoning_key == (NEW, OLD)


def test_sealer_only_when_include_asks():
    assert rc.sealer((OLD,), "t", ["message.output_text.logprobs"]) is None
    seal = rc.sealer((OLD,), "t", ["reasoning.encrypted_content"])
    assert _ring(OLD).open(seal("r"), "t") == "r"


def _reasoning(token: str | None, summary: str = "edited by the client") -> dict:
    item = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": summary}], "content": []}
    if token is not None:
        item["encrypted_content"] = token
    return item


def test_reveal_gives_the_model_the_sealed_text_not_the_client_copy():
    token = _ring(OLD).seal("the real reasoning", "t")
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    out = rc.reveal((OLD,), "t", [], [user, _reasoning(token), _reasoning(None, "plain")])
    assert out[0] is user and out[2]["summary"][0]["text"] == "plain"
    assert out[1]["content"] == [{"type": "reasoning_text", "text": "the real reasoning"}]
    assert out[1]["summary"] == [] and out[1]["encrypted_content"] == token


def test_reveal_refuses_bad_input_naming_the_item_but_keeps_stored_history():
    foreign = _ring(OLD).seal("x", "other-tenant")
    kept = rc.reveal((OLD,), "t", [_reasoning(foreign, "stored text")], [])
    assert kept[0]["summary"][0]["text"] == "stored text"
    with pytest.raises(ApiError) as err:
        rc.reveal((OLD,), "t", [], [{"type": "message"}, _reasoning(foreign)])
    body = err.value.body()["error"]
    assert err.value.status == 400 and body["param"] == "input[1].encrypted_content"
    assert body["code"] == "invalid_encrypted_content" and body["type"] == "invalid_request_error"


def test_reveal_reads_input_items_taken_from_the_store_as_history():
    foreign = _ring(OLD).seal("x", "other-tenant")  # as after a key rotated out: it no longer opens
    token = _ring(OLD).seal("the real reasoning", "t")
    items = [{"type": "message"}, _reasoning(foreign, "stored text"), _reasoning(token)]
    out = rc.reveal((OLD,), "t", [], items, stored={1, 2})  # item_reference resolved them
    assert out[1]["summary"][0]["text"] == "stored text"
    assert out[2]["content"] == [{"type": "reasoning_text", "text": "the real reasoning"}]
