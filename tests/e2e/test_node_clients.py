"""The openai Node SDK and the Vercel AI SDK (``ai`` with ``@ai-sdk/openai``'s Responses
provider) against the gateway over the real default model (SmolLM2-135M, CPU engine).

The clients are pinned by ``tests/e2e/node/package-lock.json`` and installed into
``.venv/node-clients`` by ``make node-clients`` (``make test`` runs it; the fixture runs it
too, a no-op once installed). Each case is one run of ``tests/e2e/node/openai_sdk.mjs`` or
``ai_sdk.mjs`` (``node <script> <case>``, the gateway's URL in the environment): the script
checks what only the SDK can see (its parsed objects, its stream parts, its own schema
validation of every body and chunk) and prints a JSON summary; non-zero exit is a failure.
This module then checks the summary and the stored response (what the gateway understood of
the SDK's request: the forced ``tool_choice``, the strict ``json_schema`` format).

Cases: plain text, a stream, a call forced by ``tool_choice`` naming a function, and
structured output (``text.format`` json_schema, strict). The forced call and the structured
output hold with a 135M model because the service constrains decoding with xgrammar;
outputs are short and greedy.

Reasoning, which the default model does not do, runs over a scripted engine (the service
with the ``think`` parser, gRPC and the gateway are real) whose chat template renders an
earlier assistant turn's reasoning as ``<think>...</think>``: the summary streams to the
SDK, and a later turn shows whether the reasoning the SDK sent back (encrypted, stateless;
or by ``item_reference``, the AI SDK's default with ``store: true``) or the gateway
replayed (``previous_response_id``) reached the model.
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import pytest_asyncio

from tests.fixtures.gateway import message_text, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process
from tests.integration.agentic_stack import cpu_guided

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "e2e" / "node"
INSTALLED = ROOT / ".venv" / "node-clients" / "node_modules"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
TERMINAL = ("response.completed", "response.incomplete")
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
REASONING = "The user wants a thought."
REMEMBERED = "I remembered my reasoning."


def _reply(prompt: str) -> str:
    if f"<think>{REASONING}</think>" in prompt:
        return REMEMBERED
    if prompt.rstrip().endswith("[[think]]<|im_end|>\n<|im_start|>assistant"):
        return f"<think>{REASONING}</think>Noted."
    return "I have no earlier reasoning."


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> Path:
    """The scripts beside the pinned node_modules (ESM resolves imports from the script's folder)."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH (the Node client tests need node and npm)")
    subprocess.run(["make", "-s", "node-clients"], cwd=ROOT, check=True)
    work = tmp_path_factory.mktemp("node-clients")
    for script in SCRIPTS.glob("*.mjs"):
        shutil.copy(script, work)
    (work / "node_modules").symlink_to(INSTALLED)
    return work


@pytest.fixture(scope="module")
def guided() -> None:
    assert cpu_guided(), "forced calls and structured output need the CPU engine's guided decoding"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def reasoning_gateway(tokenizer, tmp_path_factory):
    templated = copy.copy(tokenizer)
    templated.chat_template = TEMPLATE
    server = await serve_in_process(ScriptedEngine(templated, lambda ids: _reply(templated.decode(ids))),
                                    reasoning_parser="think")
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp("node-reasoning"))
    yield handle
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


async def run_node(node_dir: Path, script: str, case: str, base_url: str) -> dict:
    """``node <script> <case>`` as a subprocess (the event loop keeps serving the gateway)."""
    env = {**os.environ, "GATEWAY_BASE_URL": base_url, "GATEWAY_API_KEY": "unused", "GATEWAY_MODEL": "default"}
    proc = await asyncio.create_subprocess_exec(
        "node", str(node_dir / script), case, cwd=node_dir, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:  # a guard against a hung client, not a timing assertion
        proc.kill()
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"{script} {case} exited {proc.returncode}:\n{err.decode()[-4000:]}"
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["case"] == case
    return summary


async def stored(gateway, response_id: str) -> dict:
    return (await gateway.client.responses.retrieve(response_id)).to_dict(warnings=False)


# The openai Node SDK


async def test_openai_node_text(node_dir, gateway):
    summary = await run_node(node_dir, "openai_sdk.mjs", "text", gateway.base_url)
    assert summary["status"] in ("completed", "incomplete") and summary["text"]
    assert message_text(await stored(gateway, summary["id"])) == summary["text"]


async def test_openai_node_stream(node_dir, gateway):
    summary = await run_node(node_dir, "openai_sdk.mjs", "stream", gateway.base_url)
    types = summary["types"]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"], types
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done",
                            "response.output_item.done"] and types[-1] in TERMINAL, types
    assert "response.output_text.delta" in types
    assert summary["text"] and summary["text"] == summary["deltas"]
    assert message_text(await stored(gateway, summary["id"])) == summary["text"]


async def test_openai_node_forced_tool_call(node_dir, gateway, guided):
    summary = await run_node(node_dir, "openai_sdk.mjs", "tool", gateway.base_url)
    call = summary["call"]
    assert summary["status"] == "completed" and call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["parsed_arguments"] == json.loads(call["arguments"])
    jsonschema.validate(call["parsed_arguments"], CITY)
    assert call["call_id"].startswith("call_") and call["status"] == "completed"
    response = await stored(gateway, summary["id"])
    assert response["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert response["tools"][0]["strict"] is True and response["parallel_tool_calls"] is False


async def test_openai_node_structured_output(node_dir, gateway, guided):
    summary = await run_node(node_dir, "openai_sdk.mjs", "structured", gateway.base_url)
    assert summary["status"] == "completed"
    assert summary["parsed"] == json.loads(summary["text"])
    jsonschema.validate(summary["parsed"], PERSON)
    assert summary["format"]["type"] == "json_schema" and summary["format"]["strict"] is True
    assert (await stored(gateway, summary["id"]))["text"]["format"]["name"] == "person"


async def test_openai_node_reasoning_round_trip(node_dir, reasoning_gateway):
    summary = await run_node(node_dir, "openai_sdk.mjs", "reasoning", reasoning_gateway.base_url)
    assert summary["summary"] == REASONING and summary["text"] == "Noted."
    assert summary["items"] == ["reasoning", "message"]
    assert summary["types"][3:8] == ["response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                                     "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                                     "response.output_item.done"], summary["types"]
    assert summary["second"] == REMEMBERED  # the encrypted reasoning sent back reached the model


# The Vercel AI SDK, Responses provider


async def test_ai_sdk_generate_text(node_dir, gateway):
    summary = await run_node(node_dir, "ai_sdk.mjs", "text", gateway.base_url)
    assert summary["finishReason"] in ("stop", "length") and summary["text"]
    assert summary["warnings"] == [] and summary["responseId"] == summary["id"]
    assert summary["usage"]["outputTokens"] > 0
    assert message_text(await stored(gateway, summary["id"])) == summary["text"]


async def test_ai_sdk_stream_text(node_dir, gateway):
    summary = await run_node(node_dir, "ai_sdk.mjs", "stream", gateway.base_url)
    assert summary["parts"] == ["start", "start-step", "text-start", "text-delta", "text-end", "finish-step",
                                "finish"], summary["parts"]
    wire = summary["wire"]
    assert wire[:2] == ["response.created", "response.in_progress"] and wire[-1] in TERMINAL, wire
    assert summary["text"] and summary["text"] == summary["deltas"]
    assert summary["finishReason"] in ("stop", "length")
    assert message_text(await stored(gateway, summary["responseId"])) == summary["text"]


async def test_ai_sdk_forced_tool_call(node_dir, gateway, guided):
    summary = await run_node(node_dir, "ai_sdk.mjs", "tool", gateway.base_url)
    assert summary["finishReason"] == "tool-calls" and summary["call"]["toolName"] == "get_weather"
    jsonschema.validate(summary["call"]["input"], CITY)
    assert summary["toolResult"] == f"sunny, 21C in {summary['call']['input']['city']}"
    response = await stored(gateway, summary["id"])
    [call] = response["output"]
    assert call["call_id"] == summary["call"]["toolCallId"]
    assert json.loads(call["arguments"]) == summary["call"]["input"]
    assert response["tool_choice"] == {"type": "function", "name": "get_weather"}


async def test_ai_sdk_structured_output(node_dir, gateway, guided):
    summary = await run_node(node_dir, "ai_sdk.mjs", "object", gateway.base_url)
    assert summary["finishReason"] == "stop"
    jsonschema.validate(summary["output"], PERSON)
    fmt = (await stored(gateway, summary["id"]))["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "person" and fmt["strict"] is True


async def test_ai_sdk_reasoning_stateless_round_trip(node_dir, reasoning_gateway):
    summary = await run_node(node_dir, "ai_sdk.mjs", "reasoning", reasoning_gateway.base_url)
    assert summary["parts"] == ["start", "start-step", "reasoning-start", "reasoning-delta", "reasoning-end",
                                "text-start", "text-delta", "text-end", "finish-step", "finish"], summary["parts"]
    assert summary["reasoning"] == REASONING and summary["text"] == "Noted."
    assert summary["sent"] == ["reasoning", "text"]
    assert summary["second"] == REMEMBERED


async def test_ai_sdk_default_multi_turn_by_item_reference(node_dir, reasoning_gateway):
    """The AI SDK's default multi-turn: store left true, no previousResponseId, the history
    as response.messages; the SDK refers to the earlier reasoning and text by id."""
    summary = await run_node(node_dir, "ai_sdk.mjs", "history", reasoning_gateway.base_url)
    assert summary["first"] == "Noted." and summary["reasoning"] == REASONING
    first = await stored(reasoning_gateway, summary["firstId"])
    output_ids = [item["id"] for item in first["output"]]
    sent = summary["sent"]
    assert [item.get("role") for item in sent] == ["user", None, None, "user"], sent
    assert sent[1:3] == [{"type": "item_reference", "id": item_id} for item_id in output_ids], sent
    assert summary["second"] == REMEMBERED  # the referenced reasoning reached the model
    page = await reasoning_gateway.client.responses.input_items.list(summary["id"], order="asc")
    resolved = [item.to_dict(warnings=False) for item in page.data][1:3]
    assert [(item["type"], item["id"]) for item in resolved] == [(i["type"], i["id"]) for i in first["output"]]


async def test_ai_sdk_previous_response_id(node_dir, reasoning_gateway):
    summary = await run_node(node_dir, "ai_sdk.mjs", "chat", reasoning_gateway.base_url)
    assert summary["first"] == "Noted." and summary["reasoning"] == REASONING
    assert summary["second"] == REMEMBERED  # the stored reasoning was replayed
    assert (await stored(reasoning_gateway, summary["id"]))["previous_response_id"] == summary["previousResponseId"]
