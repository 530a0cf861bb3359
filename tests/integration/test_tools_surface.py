"""The request surface and tool kinds of late-2026 clients, end to end through the openai
SDK: a Codex-shaped request (namespace tool, hosted web_search, client_metadata, every
option), namespaced and custom tool calls coming back, custom tool grammars reaching the
engine, hosted-tool policies, hosted-environment history items and ``phase`` replay.

The "model" is scripted (a marker in the last user message picks the reply); tokenizer,
service (hermes parser, grammars), gRPC, gateway and store are real, and every stream is
checked by ``check_stream`` (the SDK's event models, ids, deltas == done == final output).
"""
from __future__ import annotations

import json
import re

import aiohttp
import openai
import pytest
import pytest_asyncio
from xgrammar.testing import _is_grammar_accept_string

from tests.fixtures.gateway import plain, raw_stream, start_gateway
from tests.fixtures.service import serve_in_process
from tests.integration.agentic_stack import GuidedScriptedEngine, cpu_guided

NS = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
    {"type": "function", "name": "spawn_agent", "description": "Spawn an agent.", "strict": False,
     "parameters": {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}}]}
EXEC = {"type": "function", "name": "exec_command", "description": "Run a command.", "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}
PATCH_GRAMMAR = 'start: "*** Begin Patch" LF line+ "*** End Patch"\nline: /[^\\n]*/ LF\n%import common.LF\n'
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
              "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_GRAMMAR}}
PATCH = '*** Begin Patch\n+print("hi")\n*** End Patch'
WEB = {"type": "web_search", "external_web_access": False}
CODEX_OPTIONS = {
    "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"}, "store": False,
    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
    "client_metadata": {"x-codex-turn-metadata": json.dumps({"turn_id": "t1", "sandbox": "seccomp"})},
    "text": {"verbosity": "low"}, "service_tier": "priority", "stream_options": {"include_obfuscation": False},
    "prompt_cache_options": {"ttl": "30m"}, "context_management": [{"type": "compaction", "compact_threshold": 5000}],
    "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "score"}}},
}


def _call(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


SCRIPT = {
    "ns": _call("multi_agent_v1.spawn_agent", {"task": "look around"}),
    "patch": _call("apply_patch", {"input": PATCH}),
    "exec": _call("exec_command", {"cmd": "echo hi"}),
}


def reply_for(prompt: str) -> str:
    if "<tool_response>" in prompt.rsplit("<|im_start|>user\n", 1)[-1]:
        return "Done."
    last_user = prompt.rsplit("<|im_start|>user\n", 1)[-1]
    match = re.search(r"\[\[(.+?)\]\]", last_user)
    return SCRIPT.get(match.group(1), "OK.") if match else "OK."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    prompts: list[str] = []

    def script(ids: list[int]) -> str:
        prompts.append(tokenizer.decode(ids))
        return reply_for(prompts[-1])

    engine = GuidedScriptedEngine(tokenizer, script, model_id="scripted-tools")
    server = await serve_in_process(engine, tool_parser="hermes")
    drop, drop_runner = await start_gateway(server.address, tmp_path_factory.mktemp("drop"))
    reject, reject_runner = await start_gateway(server.address, tmp_path_factory.mktemp("reject"),
                                                hosted_tools="reject")
    yield drop, reject, engine, prompts
    for handle, runner in ((drop, drop_runner), (reject, reject_runner)):
        await handle.client.close()
        await runner.cleanup()
    await server.stop()


async def test_a_codex_shaped_request_streams_a_namespaced_call(stack):
    drop, _, _, prompts = stack
    body = {"model": "default", "tools": [EXEC, NS, WEB], **CODEX_OPTIONS, "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[[ns]] help"}]}]}
    status, events, final = await raw_stream(drop, body)
    assert status == 200, final
    [call] = final["output"]
    assert (call["type"], call["namespace"], call["name"]) == ("function_call", "multi_agent_v1", "spawn_agent")
    assert json.loads(call["arguments"]) == {"task": "look around"}
    assert final["tools"][2] == WEB and "client_metadata" not in final
    assert '"name": "multi_agent_v1.spawn_agent"' in prompts[-1] and "web_search" not in prompts[-1]
    async with aiohttp.ClientSession() as session, session.get(drop.root + "/metrics") as resp:
        assert 'trtllm_gateway_hosted_tools_dropped_total{type="web_search"}' in await resp.text()

    # the call goes back statelessly (store: false), with its namespace, and the model sees it
    history = body["input"] + [plain(call), {"type": "function_call_output", "call_id": call["call_id"],
                                             "output": "agent-7 spawned"}]
    status, _, final = await raw_stream(drop, {**body, "input": history})
    assert status == 200 and final["output"][0]["content"][0]["text"] == "Done."
    assert '"name": "multi_agent_v1.spawn_agent"' in prompts[-1] and "agent-7 spawned" in prompts[-1]


async def test_the_sdk_sends_every_option_and_parses_a_forced_custom_call(stack):
    drop, _, engine, prompts = stack
    stream = await drop.client.responses.create(
        model="default", input="[[patch]] fix the greeting", tools=[PATCH_TOOL, EXEC],
        tool_choice={"type": "custom", "name": "apply_patch"}, stream=True,
        extra_body={k: v for k, v in CODEX_OPTIONS.items() if k not in ("tool_choice", "store")})
    events = [event async for event in stream]
    final = events[-1].response
    [call] = final.output
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", PATCH)
    deltas = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
    done = next(e for e in events if e.type == "response.custom_tool_call_input.done")
    assert "".join(deltas) == done.input == PATCH
    grammar = engine.guided[final.id].grammar  # the forced call's grammar carries the lark grammar
    assert _is_grammar_accept_string(grammar, SCRIPT["patch"])
    assert not _is_grammar_accept_string(grammar, _call("apply_patch", {"input": "rm -rf /"}))

    # its output goes back as a custom_tool_call_output in the next turn
    nxt = await drop.client.responses.create(
        model="default", previous_response_id=final.id, tools=[PATCH_TOOL, EXEC],
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Patch applied."}])
    assert nxt.output_text == "Done."
    assert json.dumps({"input": PATCH}) in prompts[-1] and "Patch applied." in prompts[-1]


async def test_in_auto_mode_a_custom_tool_grammar_constrains_calls_once_opened(stack):
    drop, _, engine, _ = stack
    resp = await drop.client.responses.create(model="default", input="[[exec]] run it", tools=[PATCH_TOOL, EXEC])
    assert resp.output[0].type == "function_call" and resp.output[0].name == "exec_command"
    grammar = engine.guided[resp.id].grammar
    assert _is_grammar_accept_string(grammar, "Plain text answer.")
    assert _is_grammar_accept_string(grammar, "Editing.\n" + SCRIPT["patch"])
    assert not _is_grammar_accept_string(grammar, _call("apply_patch", {"input": "not a patch"}))


@pytest.mark.parametrize("definition,message", [("start: missing_rule\n", "unknown name"),
                                                ("a(b", "parenthesis")])
async def test_an_invalid_grammar_is_400_naming_its_definition(stack, definition, message):
    drop, *_ = stack
    syntax = "lark" if definition.startswith("start") else "regex"
    bad = {"type": "custom", "name": "t", "format": {"type": "grammar", "syntax": syntax, "definition": definition}}
    with pytest.raises(openai.BadRequestError) as info:
        await drop.client.responses.create(model="default", input="hi", tools=[EXEC, NS, bad])
    assert info.value.body["param"] == "tools[2].format.definition" and message in info.value.body["message"]
    inner = {**NS, "tools": [NS["tools"][0], bad]}
    with pytest.raises(openai.BadRequestError) as info:
        await drop.client.responses.create(model="default", input="hi", tools=[inner])
    assert info.value.body["param"] == "tools[0].tools[1].format.definition"


async def test_hosted_tools_under_reject_and_a_choice_naming_one(stack):
    drop, reject, _, _ = stack
    with pytest.raises(openai.BadRequestError) as info:
        await reject.client.responses.create(model="default", input="hi", tools=[EXEC, WEB])
    assert (info.value.body["param"], info.value.body["code"]) == ("tools[1].type", "unsupported_parameter")
    assert (await reject.client.responses.create(model="default", input="hi", tools=[EXEC])).output_text == "OK."
    with pytest.raises(openai.BadRequestError) as info:
        await drop.client.responses.create(model="default", input="hi", tools=[EXEC, WEB],
                                           tool_choice={"type": "web_search_preview"})
    assert info.value.body["param"] == "tool_choice"


async def test_hosted_environment_history_and_phase_are_kept_and_replayed(stack):
    drop, _, _, prompts = stack
    items = [
        {"role": "user", "content": "list files"},
        {"type": "message", "role": "assistant", "phase": "commentary",
         "content": [{"type": "output_text", "text": "Listing."}]},
        {"type": "shell_call", "call_id": "s1", "action": {"commands": ["ls"]}, "status": "completed"},
        {"type": "shell_call_output", "call_id": "s1",
         "output": [{"stdout": "notes.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
        {"type": "apply_patch_call", "call_id": "p1", "status": "completed",
         "operation": {"type": "create_file", "path": "b.txt", "diff": "+b"}},
        {"type": "apply_patch_call_output", "call_id": "p1", "status": "completed"},
        {"type": "local_shell_call", "id": "lsh_9", "call_id": "l1", "status": "completed",
         "action": {"type": "exec", "command": ["pwd"], "env": {}}},
        {"type": "local_shell_call_output", "id": "l1", "output": "/work\n"},
        {"role": "assistant", "content": "Two files.", "phase": "final_answer"},
        {"role": "user", "content": "thanks"},
    ]
    first = await drop.client.responses.create(model="default", input=items)
    for text in ('"name": "shell"', "notes.txt", "(exit code 0)", '"name": "apply_patch"', "/work"):
        assert text in prompts[-1], text
    second = await drop.client.responses.create(model="default", input="again", previous_response_id=first.id)
    assert second.output_text == "OK."
    listed = (await drop.client.responses.input_items.list(first.id, order="asc")).data
    assert [getattr(i, "phase", None) for i in listed if i.type == "message" and i.role == "assistant"] == \
        ["commentary", "final_answer"]
    assert [i.type for i in listed][2:8] == ["shell_call", "shell_call_output", "apply_patch_call",
                                             "apply_patch_call_output", "local_shell_call", "local_shell_call_output"]


async def test_the_real_model_is_held_to_a_custom_tool_regex(gateway):
    assert cpu_guided(), "custom tool grammars need the CPU engine's guided decoding"
    tool = {"type": "custom", "name": "ticket", "description": "File a ticket by its code.",
            "format": {"type": "grammar", "syntax": "regex", "definition": r"[A-Z]{3}-[0-9]{4}"}}
    resp = await gateway.client.responses.create(
        model="default", input="File a ticket for the broken login page.", tools=[tool],
        tool_choice={"type": "custom", "name": "ticket"}, max_output_tokens=64, temperature=0)
    [call] = resp.output
    assert call.type == "custom_tool_call" and re.fullmatch(r"[A-Z]{3}-[0-9]{4}", call.input), call
