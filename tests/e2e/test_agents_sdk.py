"""The OpenAI Agents SDK (`openai-agents`) runs a tool-using agent against the gateway.

`OpenAIResponsesModel` is pointed at the gateway; the agent has one function tool,
`tool_choice="required"` (enforced by the service's forced-call grammar; one call per
turn, so a small model cannot repeat calls until `max_tokens`) and
`tool_use_behavior="stop_on_first_tool"`, so a small model's loop ends after the tool ran:
the run's final output is the tool's result. Run both ways the SDK offers (`Runner.run`,
non-streaming, and `Runner.run_streamed`, SSE).

Two models behind it: the scripted one (`tests/integration/agentic_stack.py`, always
runs) and the real default CPU model, which needs the CPU engine's guided decoding
(skipped until `CpuEngine.supports_guided` is True).
"""
from __future__ import annotations

import pytest
import pytest_asyncio

agents = pytest.importorskip("agents")
# Needs the agents SDK: it comes after the skip (E402).
from tests.integration.agentic_stack import cpu_guided, start_agentic_stack  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _no_tracing():
    agents.set_tracing_disabled(True)  # the SDK would export traces to api.openai.com
    yield
    agents.set_tracing_disabled(False)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scripted(tokenizer, tmp_path_factory):
    s = await start_agentic_stack(tokenizer, tmp_path_factory)
    yield s
    await s.stop()


def _weather_agent(client, calls: list[str]) -> agents.Agent:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"sunny, 21C in {city}"

    model = agents.OpenAIResponsesModel(model="default", openai_client=client)
    return agents.Agent(name="weather", instructions="Answer weather questions with the get_weather tool.",
                        tools=[get_weather], model=model, tool_use_behavior="stop_on_first_tool",
                        model_settings=agents.ModelSettings(tool_choice="required", parallel_tool_calls=False,
                                                                       max_tokens=64, temperature=0))


async def _run_both_ways(client, question: str) -> list[str]:
    calls: list[str] = []
    agent = _weather_agent(client, calls)
    result = await agents.Runner.run(agent, question, max_turns=3)
    assert result.final_output == f"sunny, 21C in {calls[0]}"
    streamed = agents.Runner.run_streamed(agent, question, max_turns=3)
    kinds = [event.type async for event in streamed.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert streamed.final_output == f"sunny, 21C in {calls[1]}"
    assert len(calls) == 2 and all(isinstance(city, str) and city for city in calls)
    return calls


async def test_agent_with_required_tool_finishes_scripted(scripted):
    calls = await _run_both_ways(scripted.handle.client, "[[call only]] What is the weather in Paris?")
    assert calls == ["Paris", "Paris"]
    forced = [g for g in scripted.engine.guided.values() if g is not None and g.grammar]
    assert len(forced) >= 2  # each model call was forced by a grammar


async def test_agent_with_required_tool_finishes_real_model(gateway):
    assert cpu_guided(), "tool_choice required needs the CPU engine's guided decoding"
    await _run_both_ways(gateway.client, "What is the weather in Paris?")
