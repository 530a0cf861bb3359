"""The whole create-request surface: every field openai-python's ``responses.create`` and
OpenAI's OpenAPI ``CreateResponse`` know is accepted (honoured or ignored, docs/gateway.md
"Request fields"); only names that exist nowhere are ``unknown_parameter``; bad types and
values are 400s naming the exact path."""
from __future__ import annotations

import typing

import pytest
from openai.types.beta.response_create_params import ResponseCreateParamsBase as BetaCreateParams
from openai.types.responses.response_create_params import ResponseCreateParamsBase

from trtllm_gateway.errors import ApiError
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import FIELDS, UNSUPPORTED, parse_create
from trtllm_gateway.translate import build_chat

BASE = {"model": "m", "input": "hello"}
#: CreateResponse's properties in OpenAI's OpenAPI description (docs/responses-api.md §1).
OPENAPI_FIELDS = (
    "metadata", "top_logprobs", "temperature", "top_p", "user", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "previous_response_id", "model", "background",
    "max_tool_calls", "text", "tools", "tool_choice", "prompt", "service_tier", "truncation", "reasoning", "input",
    "include", "parallel_tool_calls", "store", "instructions", "moderation", "stream", "stream_options",
    "conversation", "context_management", "max_output_tokens")
#: Sent by clients though in neither (Codex: ``client_metadata``).
CLIENT_FIELDS = ("client_metadata",)


def _err(body: dict) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_create(body)
    return info.value


def test_every_field_the_sdk_and_the_openapi_description_know_is_known():
    sdk = set(typing.get_type_hints(ResponseCreateParamsBase)) | {"stream"}
    known = set(FIELDS) | set(UNSUPPORTED) | {"input"}
    assert sdk - known == set()
    assert set(OPENAPI_FIELDS) - known == set()
    assert set(CLIENT_FIELDS) <= known
    assert set(UNSUPPORTED) == {"prompt"}  # a stored prompt template: the one field not served


def test_every_field_of_the_sdks_beta_create_is_known():
    # ``betas`` is the ``openai-beta`` header, not a body field
    known = set(FIELDS) | set(UNSUPPORTED) | {"input", "stream"}
    assert set(typing.get_type_hints(BetaCreateParams)) - {"betas"} - known == set()


EVERY_OPTION = {
    "client_metadata": {"x-codex-turn-metadata": '{"turn_id": "t1"}' + "x" * 2000},
    "prompt_cache_options": {"ttl": "12h", "mode": "explicit", "prewarm": False, "comparison_response_id": None},
    "prompt_cache_retention": "24h",
    "context_management": [{"type": "compaction", "compact_threshold": 200000}, {"type": "compaction"}],
    "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "score"}, "output": None}},
    "image": {"context_compression": "disabled"},
    "access_programs": {"cyber": "standard"},
    "background_options": {"completion_window": "soonest", "continuation_id": "c1"},
    "stream_options": {"include_obfuscation": False},
    "reasoning": {"effort": "low", "summary": "auto", "context": "all_turns", "mode": "standard"},
    "text": {"verbosity": "low"},
    "include": ["reasoning.encrypted_content", "message.output_text.logprobs"],
    "service_tier": "flex",
    "multi_agent": {"enabled": False, "max_concurrent_subagents": 3},
}


def test_every_option_is_accepted_together_and_nothing_of_it_leaks_into_the_echo():
    req = parse_create({**BASE, **EVERY_OPTION})
    resp = new_response(req, "resp_1", "m", 0)
    assert "client_metadata" not in resp and "context_management" not in resp  # OpenAI echoes neither
    assert "multi_agent" not in resp  # nor this (openai-python's BetaResponse has no such field)
    assert resp["reasoning"] == {"effort": "low", "summary": "auto", "context": "all_turns", "mode": "standard"}
    assert resp["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert resp["service_tier"] == "default"  # the tier actually used: this server has one
    assert req.client_metadata == EVERY_OPTION["client_metadata"]


@pytest.mark.parametrize("tier", ["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"])
def test_every_service_tier_is_accepted(tier):
    assert parse_create({**BASE, "service_tier": tier}).service_tier == "default"


@pytest.mark.parametrize("field,value,param", [
    ("client_metadata", ["a"], "client_metadata"),
    ("client_metadata", {"k": 1}, "client_metadata"),
    ("prompt_cache_options", "on", "prompt_cache_options"),
    ("prompt_cache_options", {"ttl": "1h"}, "prompt_cache_options.ttl"),
    ("prompt_cache_options", {"mode": "sometimes"}, "prompt_cache_options.mode"),
    ("prompt_cache_retention", "forever", "prompt_cache_retention"),
    ("context_management", [], "context_management"),
    ("context_management", {"type": "compaction"}, "context_management"),
    ("context_management", [{"type": "summarize"}], "context_management[0].type"),
    ("context_management", [{"compact_threshold": 5000}], "context_management[0].type"),
    ("context_management", [{"type": "compaction", "compact_threshold": 999}],
     "context_management[0].compact_threshold"),
    ("context_management", [{"type": "compaction", "compact_threshold": "1k"}],
     "context_management[0].compact_threshold"),
    ("moderation", {"policy": {}}, "moderation.model"),
    ("moderation", {"model": "m", "policy": {"input": {"mode": "loud"}}}, "moderation.policy.input.mode"),
    ("image", {"context_compression": "max"}, "image.context_compression"),
    ("access_programs", {"cyber": "red"}, "access_programs.cyber"),
    ("background_options", {"completion_window": "1d"}, "background_options.completion_window"),
    ("stream_options", {"include_obfuscation": "no"}, "stream_options.include_obfuscation"),
    ("stream_options", True, "stream_options"),
    ("reasoning", {"context": "everything"}, "reasoning.context"),
    ("reasoning", {"mode": 3}, "reasoning.mode"),
    ("text", {"verbosity": "loud"}, "text.verbosity"),
    ("service_tier", "turbo", "service_tier"),
    ("multi_agent", {}, "multi_agent.enabled"),
    ("multi_agent", {"enabled": "yes"}, "multi_agent.enabled"),
    ("multi_agent", {"enabled": False, "max_concurrent_subagents": 0}, "multi_agent.max_concurrent_subagents"),
    ("multi_agent", {"enabled": False, "max_concurrent_subagents": True}, "multi_agent.max_concurrent_subagents"),
])
def test_bad_option_types_and_values_are_400_naming_the_path(field, value, param):
    err = _err({**BASE, field: value})
    assert (err.status, err.kind.type, err.param) == (400, "invalid_request_error", param)


@pytest.mark.parametrize("field,value,param", [
    ("prompt_cache_options", {"ttl": "30m", "prefetch": True}, "prompt_cache_options.prefetch"),
    ("stream_options", {"include_usage": True}, "stream_options.include_usage"),
])
def test_unknown_keys_inside_an_option_are_unknown_parameters(field, value, param):
    err = _err({**BASE, field: value})
    assert (err.param, err.code) == (param, "unknown_parameter")


@pytest.mark.parametrize("field,value,param", [
    ("prompt_cache_options", {"prewarm": True}, "prompt_cache_options.prewarm"),
    ("moderation", {"model": "m", "policy": {"output": {"mode": "block"}}}, "moderation.policy.output.mode"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("multi_agent", {"enabled": True}, "multi_agent.enabled"),
])
def test_values_this_server_cannot_honour_are_unsupported(field, value, param):
    err = _err({**BASE, field: value})
    assert (err.status, err.param, err.code) == (400, param, "unsupported_parameter")


def test_a_name_that_exists_nowhere_is_an_unknown_parameter():
    err = _err({**BASE, "client_metadatas": {}})
    assert (err.param, err.code) == ("client_metadatas", "unknown_parameter")


def _history() -> list:
    return [
        {"role": "user", "content": "first question"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "OLD THOUGHT"}]},
        {"role": "assistant", "content": "first answer", "phase": "final_answer"},
        {"role": "user", "content": "second question"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "NEW THOUGHT"}]},
        {"role": "assistant", "content": "looking", "phase": "commentary"},
        {"role": "user", "content": "go on"},
    ]


@pytest.mark.parametrize("context,seen", [
    (None, ["OLD THOUGHT", "NEW THOUGHT"]), ("auto", ["OLD THOUGHT", "NEW THOUGHT"]),
    ("all_turns", ["OLD THOUGHT", "NEW THOUGHT"]), ("current_turn", []),
])
def test_reasoning_context_decides_which_reasoning_items_the_model_sees(context, seen):
    reasoning = {"context": context} if context else None
    req = parse_create({**BASE, "input": _history(), "reasoning": reasoning})
    chat = build_chat(req, req.input.items)
    assert [m.reasoning for m in chat.messages if m.reasoning] == seen


def test_current_turn_keeps_the_reasoning_after_the_last_user_message():
    items = _history()[:-1] + [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                               {"type": "function_call_output", "call_id": "c1", "output": "ok"}]
    items.insert(4, {"role": "user", "content": "last"})
    req = parse_create({**BASE, "input": items, "reasoning": {"context": "current_turn"}})
    assert [m.reasoning for m in build_chat(req, req.input.items).messages if m.reasoning] == ["NEW THOUGHT"]


def test_phase_is_kept_on_assistant_messages_and_not_shown_to_the_model():
    req = parse_create({**BASE, "input": _history()})
    assistants = [i for i in req.input.items if i["role" if i["type"] == "message" else "type"] == "assistant"]
    assert [a["phase"] for a in assistants] == ["final_answer", "commentary"]
    plain = parse_create({**BASE, "input": [{k: v for k, v in i.items() if k != "phase"} for i in _history()]})
    assert build_chat(req, req.input.items) == build_chat(plain, plain.input.items)


def test_phase_on_a_user_message_is_ignored_and_a_bad_phase_is_400():
    req = parse_create({**BASE, "input": [{"role": "user", "content": "hi", "phase": "commentary"}]})
    assert "phase" not in req.input.items[0]
    err = _err({**BASE, "input": [{"role": "assistant", "content": "x", "phase": "final"}, "hi"]})
    assert err.param == "input[0].phase"


def test_the_gateway_may_set_temperature_and_output_cap_defaults_which_the_echo_shows():
    from trtllm_gateway.settings import GatewaySettings

    limits = GatewaySettings(default_temperature=0.0, default_max_output_tokens=256)
    req = parse_create(BASE, limits=limits)
    resp = new_response(req, "resp_1", "m", 0)
    assert (req.temperature, req.max_output_tokens) == (0.0, 256) == (resp["temperature"], resp["max_output_tokens"])
    given = parse_create({**BASE, "temperature": 0.7, "max_output_tokens": 32}, limits=limits)
    assert (given.temperature, given.max_output_tokens) == (0.7, 32)
    assert (parse_create(BASE).temperature, parse_create(BASE).max_output_tokens) == (1.0, None)


@pytest.mark.parametrize("flags", [["--default-temperature", "2.5"], ["--default-max-output-tokens", "8"],
                                   ["--hosted-tools", "ignore"]])
def test_bad_default_and_policy_flags_are_refused(flags):
    from trtllm_gateway.settings import parse_settings

    with pytest.raises(SystemExit):
        parse_settings(flags, env={})
