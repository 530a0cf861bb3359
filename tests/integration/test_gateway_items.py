"""Non-text output items end to end: function calls parsed by the service's real tool parser.

The default model makes no tool calls, so the reply comes from the scripted test engine
(`tests/fixtures/scripted_engine.py`); everything after it (detokenizer, hermes parser,
gRPC server, gateway, store) is real.
"""
from __future__ import annotations

import json

import pytest_asyncio

from tests.fixtures.gateway import plain, raw_stream, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
# calls are parsed only for requests that offer tools (tool_choice "none" or no tools: text)
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tool_gateway(tokenizer, tmp_path_factory):
    def reply(prompt_ids: list[int]) -> str:
        prompt = tokenizer.decode(prompt_ids)
        # the answer proves the tool output reached the model (SmolLM2's ChatML template
        # renders tool results but drops assistant tool_calls, so only the output shows)
        if "sunny, 21C" in prompt:
            return "It is sunny in Paris."
        return CALL

    engine = ScriptedEngine(tokenizer, reply, model_id="scripted-tools")
    server = await serve_in_process(engine, tool_parser="hermes")
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp("tools"))
    yield handle
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


async def test_function_call_item_streams_and_is_stored(tool_gateway):
    status, events, final = await raw_stream(tool_gateway, {"model": "default", "input": "Weather in Paris?",
                                                            "tools": TOOLS})
    assert status == 200 and final["status"] == "completed"
    calls = [item for item in final["output"] if item["type"] == "function_call"]
    assert len(calls) == 1, final["output"]
    call = calls[0]
    assert call["id"].startswith("fc_") and call["call_id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert not any(CALL[:11] in (e.get("delta") or "") for e in events), "tool-call markup leaked into text"
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.done" in types
    stored = await tool_gateway.client.responses.retrieve(final["id"])
    assert plain(stored) == final


async def test_function_call_history_is_replayed(tool_gateway):
    c = tool_gateway.client
    first = await c.responses.create(model="default", input="Weather in Paris?", tools=TOOLS)
    call = next(item for item in first.output if item.type == "function_call")
    second = await c.responses.create(
        model="default", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output_text == "It is sunny in Paris."
    assert second.usage.input_tokens > first.usage.input_tokens
    # stateless: the same history sent in full gives the same prompt
    stateless = await c.responses.create(model="default", store=False, tools=TOOLS, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert stateless.output_text == second.output_text
    assert stateless.usage.input_tokens == second.usage.input_tokens
