"""The stack behind the agentic integration tests: scripted "model", everything else real.

The scripted engine (`tests/fixtures/scripted_engine.py`) replays a reply chosen from the
templated prompt through the real tokenizer; the service (hermes tool parser, `think`
reasoning parser, Hermes-in-text tool rendering for SmolLM2's template, forced-call
grammars), the gRPC hop, the gateway and its SQLite store are the real ones.

`GuidedScriptedEngine` says it supports guided decoding and records the constraint each
request got (`guided[request_id]`; the gateway's request id is the response id), so a test
can check the grammar or schema that reached the engine. It does not apply the constraint:
the script already says something that satisfies it, and the tests check that the
constraint accepts it (xgrammar) or that the output validates (jsonschema).

Replies are picked by a `[[key]]` marker in the last user message (`SCRIPT`); once a tool
result is in the prompt, the reply proves the model saw both the call and its result.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.fixtures.gateway import GatewayHandle, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "The time now.",
             "parameters": {"type": "object", "properties": {}}}
CALL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
CALL = f"<tool_call>\n{CALL_JSON}\n</tool_call>"
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"], "additionalProperties": False}
FINAL_ANSWER = "It is sunny in Paris."

SCRIPT = {
    "weather": "Let me check.\n" + CALL,
    "call only": CALL,
    "two calls": CALL + "\n" + TIME_CALL,
    "bad json": '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',
    "unknown fn": '<tool_call>\n{"name": "launch_rockets", "arguments": {}}\n</tool_call>',
    "person": '{"name": "Ada", "age": 36}',
    "think": "<think>Two plus two is four.</think>The answer is 4.",
    "plain": "Hello there, friend. Nice to meet you.",
    "markup as text": "I would write <tool_call> here.",
}


def reply_for(prompt: str) -> str:
    if "<tool_response>" in prompt:
        # SmolLM2's template has no tools: the service renders calls and results as Hermes text
        saw_call = f"<|im_start|>assistant\n{CALL}" in prompt or f"Let me check.\n{CALL}" in prompt
        return FINAL_ANSWER if saw_call and "sunny, 21C" in prompt else "HISTORY MISSING"
    last_user = prompt.rsplit("<|im_start|>user\n", 1)[-1]
    match = re.search(r"\[\[(.+?)\]\]", last_user)
    return SCRIPT.get(match.group(1), "OK.") if match else "OK."


def cpu_guided() -> bool:
    """Whether the real CPU engine does guided decoding (forced calls, structured output)."""
    try:
        from trtllm_service.engine.cpu import CpuEngine
    except ImportError:
        return False
    return bool(CpuEngine.supports_guided)


class GuidedScriptedEngine(ScriptedEngine):
    supports_guided = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guided: dict[str, object] = {}

    def generate(self, request_id, prompt_token_ids, sampling):
        self.guided[request_id] = sampling.guided
        return super().generate(request_id, prompt_token_ids, sampling)


class BareScriptedEngine(ScriptedEngine):
    """A model with no guided decoding and no logprobs (capability checks)."""

    supports_guided = False
    supports_logprobs = False


@dataclass
class AgenticStack:
    handle: GatewayHandle          # dialect "openai"
    open_responses: GatewayHandle  # the same service, dialect "open_responses"
    engine: GuidedScriptedEngine
    prompts: list[str] = field(default_factory=list)
    _closers: list = field(default_factory=list)

    async def stop(self) -> None:
        for close in reversed(self._closers):
            await close()


async def _gateway(stack: AgenticStack, address: str, tmp_dir, **overrides) -> GatewayHandle:
    handle, runner = await start_gateway(address, tmp_dir, **overrides)
    stack._closers += [runner.cleanup, handle.client.close]
    return handle


async def start_agentic_stack(tokenizer, tmp_factory) -> AgenticStack:
    prompts: list[str] = []

    def script(prompt_ids: list[int]) -> str:
        prompt = tokenizer.decode(prompt_ids)
        prompts.append(prompt)
        return reply_for(prompt)

    engine = GuidedScriptedEngine(tokenizer, script, model_id="scripted-agentic")
    server = await serve_in_process(engine, tool_parser="hermes", reasoning_parser="think")
    stack = AgenticStack(None, None, engine, prompts, [server.stop])  # the gateways are added next
    stack.handle = await _gateway(stack, server.address, tmp_factory.mktemp("agentic"))
    stack.open_responses = await _gateway(stack, server.address, tmp_factory.mktemp("agentic-or"),
                                          reasoning_dialect="open_responses")
    return stack


async def start_bare_stack(tokenizer, tmp_factory) -> AgenticStack:
    engine = BareScriptedEngine(tokenizer, "OK.", model_id="scripted-bare")
    server = await serve_in_process(engine)
    stack = AgenticStack(None, None, engine, [], [server.stop])  # the gateway is added next
    stack.handle = await _gateway(stack, server.address, tmp_factory.mktemp("bare"))
    return stack
