"""POST /v1/responses/compact: shapes (openai SDK models), what is kept, what the model
summarises, and compaction items fed back as input.

Most tests use the scripted engine, whose "summary" proves which turns reached the
summarising prompt; one test runs the real default model to show it writes the summary.
"""
from __future__ import annotations

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai.types.responses import CompactedResponse, ResponseCompactionItem, ResponseInputItem
from pydantic import TypeAdapter

from tests.fixtures.gateway import plain
from tests.integration.scripted_stack import start_stack
from trtllm_gateway import compaction, compaction_item

SUMMARY = "SUMMARY: the user is Ada and likes Paris."


def reply(prompt: str) -> str:
    if compaction.REQUEST in prompt:
        return SUMMARY
    if "What is my name?" in prompt:
        return "Your name is Ada." if SUMMARY in prompt else "I do not know."
    return "Noted."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("compact"), reply)
    yield s
    await s.stop()


def check_shape(body: dict) -> None:
    """The SDK models: CompactedResponse around the compaction item; the kept messages are
    input items (the SDK types `output` as output items, yet documents user messages in it)."""
    compactions = [i for i in body["output"] if i["type"] == "compaction"]
    CompactedResponse.model_validate(dict(body, output=compactions))
    for item in body["output"]:
        if item["type"] == "compaction":
            ResponseCompactionItem.model_validate(item)
        else:
            TypeAdapter(ResponseInputItem).validate_python(item)


def summary_of(item) -> str:
    return compaction_item.decode(item["encrypted_content"])


async def test_older_turns_become_one_model_written_compaction_item(stack):
    c = stack.handle.client
    first = await c.responses.create(model="default", instructions="Be brief.",
                                     input=[{"role": "developer", "content": "You help Ada."},
                                            {"role": "user", "content": "My name is Ada"}])
    second = await c.responses.create(model="default", previous_response_id=first.id, input="I like Paris")
    compacted = await c.responses.compact(model="default", previous_response_id=second.id,
                                          input=[{"role": "user", "content": "What is my name?"}])
    body = plain(compacted)
    check_shape(body)
    assert body["object"] == "response.compaction" and body["usage"]["output_tokens"] > 0
    kinds = [(i["type"], i.get("role")) for i in body["output"]]
    assert kinds == [("message", "developer"), ("compaction", None), ("message", "user")]
    assert body["output"][2]["content"][0]["text"] == "What is my name?"
    assert summary_of(body["output"][1]) == SUMMARY and body["output"][1]["id"].startswith("cmp_")
    summarised = stack.prompts[-1]  # what the model summarised: the older turns, not the last one
    assert "My name is Ada" in summarised and "I like Paris" in summarised and "Noted." in summarised
    assert "What is my name?" not in summarised

    # the compacted window works as the next input: the model reads the summary as context
    nxt = await c.responses.create(model="default", input=body["output"])
    assert nxt.output_text == "Your name is Ada."
    assert compaction_item.CONTEXT_HEADER.strip() in stack.prompts[-1]
    # and a later compaction rolls the earlier summary into the new one
    again = await c.responses.compact(model="default", previous_response_id=nxt.id,
                                      input=[{"role": "user", "content": "Anything else?"}])
    assert [i.type for i in again.output] == ["message", "compaction", "message"]
    assert SUMMARY in stack.prompts[-1] and "Your name is Ada." in stack.prompts[-1]


async def test_tool_calls_and_results_are_summarised_and_the_running_turn_kept(stack):
    window = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "And in Rome?"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_2", "output": "rain, 15C"},
    ]
    compacted = await stack.handle.client.responses.compact(model="default", input=window)
    body = plain(compacted)
    check_shape(body)
    assert [i["type"] for i in body["output"]] == ["compaction", "message", "function_call", "function_call_output"]
    assert body["output"][3]["output"] == "rain, 15C"  # the running turn, verbatim
    assert "sunny, 21C" in stack.prompts[-1] and "get_weather" in stack.prompts[-1]
    assert "rain, 15C" not in stack.prompts[-1]


async def test_a_single_turn_gets_an_empty_compaction_without_a_model_call(stack):
    before = len(stack.prompts)
    compacted = await stack.handle.client.responses.compact(model="default", input="Hello there")
    assert [i.type for i in compacted.output] == ["compaction", "message"]
    assert compaction_item.decode(compacted.output[0].encrypted_content) == ""
    assert compacted.usage.total_tokens == 0 and len(stack.prompts) == before
    # fed back, the empty summary adds nothing to the prompt
    await stack.handle.client.responses.create(model="default", input=[plain(i) for i in compacted.output])
    assert compaction_item.CONTEXT_HEADER.strip() not in stack.prompts[-1]


async def test_compact_errors(stack):
    async def post(path: str, body: dict) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            async with session.post(stack.handle.base_url + path, json=body) as resp:
                return resp.status, await resp.json()

    foreign = {"type": "compaction", "encrypted_content": "gAAAAABo-opaque-blob-from-elsewhere"}
    for path, body, status, param in [
        ("/responses/compact", {"input": "hi"}, 400, "model"),
        ("/responses/compact", {"model": "default", "input": "hi", "stream": True}, 400, "stream"),
        ("/responses/compact", {"model": "nope", "input": "hi"}, 404, "model"),
        ("/responses/compact", {"model": "default", "previous_response_id": "resp_nope"}, 404,
         "previous_response_id"),
        ("/responses/compact", {"model": "default", "input": [foreign]}, 400, "input[0].encrypted_content"),
        ("/responses", {"model": "default", "input": [foreign, {"role": "user", "content": "hi"}]}, 400,
         "input[0].encrypted_content"),
    ]:
        code, err = await post(path, body)
        assert (code, err["error"]["param"]) == (status, param), (body, err)
    with pytest.raises(openai.BadRequestError):
        await stack.handle.client.responses.compact(model=None, input="hi")


async def test_the_real_model_writes_the_summary(gateway):
    """The default model (SmolLM2-135M) summarises three turns about a trip to Paris."""
    c = gateway.client
    window = [
        {"role": "user", "content": "I am planning a trip to Paris in May with my sister Claire."},
        {"role": "assistant", "content": "Paris in May is lovely. Do you want museum tips?"},
        {"role": "user", "content": "Yes, we love the Louvre and we have a budget of 900 euros."},
        {"role": "assistant", "content": "Book the Louvre online; 900 euros covers a modest hotel."},
        {"role": "user", "content": "Thanks. Now, what should we pack?"},
    ]
    compacted = await c.responses.compact(model="default", input=window)
    body = plain(compacted)
    check_shape(body)
    assert [i["type"] for i in body["output"]] == ["compaction", "message"]
    assert body["output"][1]["content"][0]["text"] == "Thanks. Now, what should we pack?"
    summary = summary_of(body["output"][0])
    assert summary and body["usage"]["output_tokens"] > 0
    assert body["usage"]["output_tokens"] <= compaction.SUMMARY_MAX_TOKENS
    assert "Paris" in summary or "Louvre" in summary, summary
