"""Namespace, custom and hosted tools, and the tool-call history items of hosted
environments: validation, what the model is offered, how calls stream back (pure)."""
from __future__ import annotations

import json

import pytest
from openai.types.responses import Response

from tests.fixtures.gateway import check_stream, parse_sse
from trtllm_gateway import custom_tools, hosted_tools, sse
from trtllm_gateway.errors import ApiError
from trtllm_gateway.idempotency import replay_events
from trtllm_gateway.limits import check_tools_and_schemas
from trtllm_gateway.metrics import GatewayMetrics
from trtllm_gateway.objects import new_response
from trtllm_gateway.request import parse_create
from trtllm_gateway.settings import GatewaySettings
from trtllm_gateway.streaming import INVALID_CALL, StreamState, finalize, on_delta, start
from trtllm_gateway.tools import call_rules
from trtllm_gateway.translate import build_chat
from trtllm_responses.inference.v1 import inference_pb2 as pb

FN = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
NS = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
      "tools": [{"type": "function", "name": "spawn_agent", "description": "Spawn.", "strict": False,
                 "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}},
                {"type": "custom", "name": "note"}]}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'}}
WEB = {"type": "web_search", "external_web_access": False}


def _req(**body):
    return parse_create({"model": "m", "input": "hi", **body})


def _err(**body) -> ApiError:
    with pytest.raises(ApiError) as info:
        _req(**body)
    return info.value


def test_namespace_tools_are_offered_under_qualified_names_and_echoed_as_sent():
    req = _req(tools=[FN, NS, WEB])
    chat = build_chat(req, req.input.items)
    assert [t.name for t in chat.tools] == ["exec_command", "multi_agent_v1.spawn_agent", "multi_agent_v1.note"]
    assert req.tools[1]["tools"][0] == {**NS["tools"][0]}
    assert req.tools[2] == WEB  # dropped, not offered, echoed
    rules = call_rules(req)
    assert rules["namespaces"] == {"multi_agent_v1.spawn_agent": ("multi_agent_v1", "spawn_agent"),
                                   "multi_agent_v1.note": ("multi_agent_v1", "note")}
    assert rules["custom_tools"] == {"multi_agent_v1.note"}
    Response.model_validate(new_response(req, "resp_1", "m", 0))  # the echo is a valid Response


def test_custom_tools_are_offered_as_functions_of_one_string_with_their_grammar():
    req = _req(tools=[PATCH, {"type": "custom", "name": "free"}])
    assert req.tools[1] == {"type": "custom", "name": "free", "description": None, "format": {"type": "text"}}
    patch, free = build_chat(req, req.input.items).tools
    assert json.loads(patch.parameters_json) == custom_tools.INPUT_SCHEMA and patch.strict
    assert (patch.custom.syntax, patch.custom.definition, patch.custom.param) == \
        ("lark", 'start: "*** Begin Patch"', "tools[0].format.definition")
    assert "Edit files." in patch.description and "lark grammar" in patch.description
    assert free.custom.syntax == "text" and not free.custom.definition


@pytest.mark.parametrize("tools,param", [
    ([{"type": "namespace", "name": "n", "description": "d", "tools": []}], "tools[0].tools"),
    ([{"type": "namespace", "name": "n", "tools": [NS]}], "tools[0].tools[0].type"),
    ([{"type": "namespace", "name": "n", "tools": [WEB]}], "tools[0].tools[0].type"),
    ([{"type": "namespace", "name": "n", "tools": [FN, FN]}], "tools[0].tools[1].name"),
    ([{"type": "namespace", "name": "a.b", "tools": [FN]}], "tools[0].name"),
    ([NS, NS], "tools[1].name"),
    ([{"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"}}],
     "tools[0].format.syntax"),
    ([{"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "regex", "definition": ""}}],
     "tools[0].format.definition"),
    ([{"type": "custom", "name": "c", "format": {"type": "json"}}], "tools[0].format.type"),
    ([{"type": "custom", "name": "exec_command"}, FN], "tools[1].name"),  # one name space for both
])
def test_bad_namespace_and_custom_tools_are_400_naming_the_path(tools, param):
    assert _err(tools=tools).param == param


def test_hosted_tools_are_dropped_by_default_and_refused_under_reject():
    req = _req(tools=[WEB, {"type": "mcp", "server_label": "x"}, FN])
    assert hosted_tools.dropped(req.tools) == ["web_search", "mcp"]
    assert [t.name for t in build_chat(req, req.input.items).tools] == ["exec_command"]
    with pytest.raises(ApiError) as info:
        parse_create({"model": "m", "input": "hi", "tools": [FN, WEB]},
                     limits=GatewaySettings(hosted_tools="reject"))
    assert (info.value.param, info.value.code) == ("tools[1].type", "unsupported_parameter")


def test_dropped_tools_are_counted_by_type():
    metrics = GatewayMetrics()
    hosted_tools.record(metrics, _req(tools=[WEB, WEB, {"type": "file_search"}, FN]).tools)
    text = metrics.exposition()[0].decode()
    assert 'trtllm_gateway_hosted_tools_dropped_total{type="web_search"} 2.0' in text
    assert 'trtllm_gateway_hosted_tools_dropped_total{type="file_search"} 1.0' in text


@pytest.mark.parametrize("choice", [
    {"type": "web_search_preview"}, {"type": "mcp", "server_label": "x"}, {"type": "shell"},
    {"type": "apply_patch"}, {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]}])
def test_a_tool_choice_naming_a_hosted_tool_is_400(choice):
    assert _err(tools=[WEB, FN], tool_choice=choice).param.startswith("tool_choice")


def test_forcing_a_call_with_only_hosted_tools_is_400():
    err = _err(tools=[WEB], tool_choice="required")
    assert err.param == "tool_choice" and "hosted" in err.message


@pytest.mark.parametrize("choice,forced", [
    ({"type": "custom", "name": "apply_patch"}, "apply_patch"),
    ({"type": "function", "name": "multi_agent_v1.spawn_agent"}, "multi_agent_v1.spawn_agent"),
    ({"type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1"}, "multi_agent_v1.spawn_agent"),
])
def test_named_choices_force_the_offered_name(choice, forced):
    req = _req(tools=[FN, NS, PATCH], tool_choice=choice)
    assert build_chat(req, req.input.items).tool_choice.function_name == forced


def test_allowed_tools_may_name_a_namespace_or_custom_tools():
    choice = {"type": "allowed_tools", "mode": "auto",
              "tools": [{"type": "namespace", "name": "multi_agent_v1"}, {"type": "custom", "name": "apply_patch"}]}
    req = _req(tools=[FN, NS, PATCH], tool_choice=choice)
    assert [t.name for t in build_chat(req, req.input.items).tools] == \
        ["multi_agent_v1.spawn_agent", "multi_agent_v1.note", "apply_patch"]


@pytest.mark.parametrize("choice", [{"type": "function", "name": "apply_patch"},  # a custom tool, not a function
                                    {"type": "custom", "name": "exec_command"},
                                    {"type": "function", "name": "spawn_agent"}])  # namespaced: needs its namespace
def test_named_choices_must_match_the_tool_type_and_name(choice):
    assert _err(tools=[FN, NS, PATCH], tool_choice=choice).param == "tool_choice"


def test_namespace_members_count_toward_the_tool_limit():
    limits = GatewaySettings(max_tools=3)
    check_tools_and_schemas({"tools": [NS, FN]}, limits)
    with pytest.raises(ApiError) as info:
        check_tools_and_schemas({"tools": [NS, FN, FN]}, limits)
    assert info.value.param == "tools"
    with pytest.raises(ApiError) as info:
        check_tools_and_schemas({"tools": [NS]}, GatewaySettings(max_schema_bytes=30))
    assert info.value.param == "tools[0].tools[0].parameters"


HISTORY = [
    {"role": "user", "content": "fix it"},
    {"type": "function_call", "call_id": "c0", "name": "spawn_agent", "namespace": "multi_agent_v1",
     "arguments": '{"task": "t"}'},
    {"type": "function_call_output", "call_id": "c0", "output": "spawned"},
    {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": '*** Begin Patch\n"x"'},
    {"type": "custom_tool_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "Done!"}]},
    {"type": "shell_call", "call_id": "c2", "action": {"commands": ["ls", "pwd"], "timeout_ms": 1000}},
    {"type": "shell_call_output", "call_id": "c2", "output": [
        {"stdout": "a.txt\n", "stderr": "warn", "outcome": {"type": "exit", "exit_code": 1}},
        {"stdout": "", "stderr": "", "outcome": {"type": "timeout"}}]},
    {"type": "local_shell_call", "id": "lsh_1", "call_id": "c3", "status": "completed",
     "action": {"type": "exec", "command": ["echo", "hi"], "env": {}}},
    {"type": "local_shell_call_output", "id": "c3", "output": "hi\n"},
    {"type": "apply_patch_call", "call_id": "c4", "status": "completed",
     "operation": {"type": "update_file", "path": "a.py", "diff": "@@\n-x\n+y"}},
    {"type": "apply_patch_call_output", "call_id": "c4", "status": "failed", "output": "no such file"},
]


def test_hosted_environment_calls_and_outputs_render_as_tool_calls_and_results():
    req = _req(input=HISTORY)
    assert [i["id"].split("_")[0] for i in req.input.items] == \
        ["msg", "fc", "fco", "ctc", "ctco", "shc", "shco", "lsh", "c3", "apc", "apco"]
    messages = build_chat(req, req.input.items).messages
    calls = [(c.id, c.name, c.arguments) for m in messages for c in m.tool_calls]
    assert calls == [
        ("c0", "multi_agent_v1.spawn_agent", '{"task": "t"}'),
        ("c1", "apply_patch", json.dumps({"input": '*** Begin Patch\n"x"'})),
        ("c2", "shell", json.dumps({"commands": ["ls", "pwd"], "timeout_ms": 1000})),
        ("c3", "local_shell", json.dumps({"type": "exec", "command": ["echo", "hi"], "env": {}})),
        ("c4", "apply_patch", json.dumps({"type": "update_file", "path": "a.py", "diff": "@@\n-x\n+y"}))]
    results = [(m.tool_call_id, m.content[0].text) for m in messages if m.role == "tool"]
    assert results == [("c0", "spawned"), ("c1", "Done!"),
                       ("c2", "a.txt\n\nstderr:\nwarn\n(exit code 1)\n\n(timed out)"), ("c3", "hi\n"),
                       ("c4", "failed\nno such file")]


@pytest.mark.parametrize("item,param", [
    ({"type": "shell_call", "call_id": "c", "action": {"commands": "ls"}}, "input[0].action.commands"),
    ({"type": "shell_call_output", "call_id": "c", "output": [{"stdout": "", "stderr": "", "outcome": {}}]},
     "input[0].output[0].outcome"),
    ({"type": "local_shell_call_output", "output": "x"}, "input[0].id"),
    ({"type": "apply_patch_call", "call_id": "c", "operation": {"type": "rename"}}, "input[0].operation"),
    ({"type": "apply_patch_call_output", "call_id": "c", "status": "ok"}, "input[0].status"),
    ({"type": "custom_tool_call", "call_id": "c", "name": "n", "input": 5}, "input[0].input"),
    ({"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}", "namespace": "a b"},
     "input[0].namespace"),
])
def test_bad_history_items_are_400_naming_the_path(item, param):
    assert _err(input=[item, {"role": "user", "content": "x"}]).param == param


def _state(**body) -> StreamState:
    req = _req(tools=[FN, NS, PATCH], **body)
    return StreamState(new_response(req, "resp_test", "m", 1700000000), **call_rules(req))


def _run(st: StreamState, deltas: list[pb.Delta]) -> tuple[dict, list[dict]]:
    events = start(st)
    for delta in deltas:
        events += on_delta(st, delta)
    resp, closing = finalize(st, pb.Final(finish_reason=pb.FINISH_REASON_TOOL_CALLS))
    body = b"".join(sse.frame(dict(e, sequence_number=i)) for i, e in enumerate(events + closing)).decode()
    events = parse_sse(body)
    assert check_stream(events) == resp  # the SDK's event models, deltas == done, items == output
    return resp, events


def _piece(index: int, args: str, name: str = "") -> pb.Delta:
    return pb.Delta(tool_calls=[pb.ToolCallDelta(index=index, id=f"call_{index}" if name else "", name=name,
                                                 arguments_delta=args)])


def test_a_custom_call_streams_its_decoded_input():
    patch = '*** Begin Patch\n+print("hi")\n*** End Patch\n'
    args = json.dumps({"input": patch})
    pieces = [args[:5], args[5:14], args[14:15], args[15:31], args[31:]]  # splits inside escapes too
    resp, events = _run(_state(), [_piece(0, pieces[0], "apply_patch")] + [_piece(0, p) for p in pieces[1:]])
    [item] = resp["output"]
    assert item == {"id": item["id"], "type": "custom_tool_call", "status": "completed", "call_id": "call_0",
                    "name": "apply_patch", "input": patch}
    assert item["id"].startswith("ctc_")
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == patch and len(deltas) > 1
    assert Response.model_validate(resp).output[0].input == patch


def test_a_namespaced_call_carries_its_namespace_and_own_name():
    resp, events = _run(_state(), [_piece(0, '{"task": "x"}', "multi_agent_v1.spawn_agent"),
                                   _piece(1, '{"input": "n"}', "multi_agent_v1.note")])
    fn, custom = resp["output"]
    assert (fn["type"], fn["namespace"], fn["name"]) == ("function_call", "multi_agent_v1", "spawn_agent")
    assert (custom["type"], custom["namespace"], custom["name"], custom["input"]) == \
        ("custom_tool_call", "multi_agent_v1", "note", "n")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "spawn_agent"
    parsed = Response.model_validate(resp).output
    assert parsed[0].namespace == parsed[1].namespace == "multi_agent_v1"


@pytest.mark.parametrize("args,input_", [('{"text": "x"}', '{"text": "x"}'), ('{"input": "ab", "x": 1}', "ab")])
def test_a_custom_call_with_other_arguments_is_incomplete_and_says_why(args, input_):
    resp, _ = _run(_state(), [_piece(0, args, "apply_patch")])
    [item] = resp["output"]
    assert (item["status"], item["input"], item["error"]["code"]) == ("incomplete", input_, INVALID_CALL)
    assert args in item["error"]["message"]


def test_an_idempotent_replay_rebuilds_the_custom_call_events():
    resp, live = _run(_state(), [_piece(0, json.dumps({"input": "a\tb"}), "apply_patch")])
    replayed = [dict(e, sequence_number=i) for i, e in enumerate(replay_events(resp, "openai"))]
    assert check_stream(replayed) == resp
    assert [e["type"] for e in replayed] == [e["type"] for e in live]


@pytest.mark.parametrize("pieces,text", [
    (['{"input": "a\\', 'nb"}'], "a\nb"),
    (['{ "input" :', ' "x\\u00', 'e9\\ud83d', '\\ude00"}'], "x\u00e9\U0001f600"),
    (['{"input": "q\\"uote\\\\"', "}"], 'q"uote\\'),
    (['{"other": "x"}'], ""),
    (['{"input": 5}'], ""),
])
def test_the_input_decoder_decodes_as_json_does(pieces, text):
    decoder = custom_tools.InputDecoder()
    assert "".join(decoder.feed(p) for p in pieces) == text
