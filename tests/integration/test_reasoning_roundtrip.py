"""Reasoning summaries and encrypted reasoning, end to end, as a stateless client uses them.

The stack: a scripted engine (the model's words), the real service with the `think`
reasoning parser, the real gateway with two API keys (two tenants) and a configured
``--reasoning-key``. The tokenizer is the default model's with a reasoning model's kind of
chat template: earlier assistant turns render their ``reasoning_content`` as
``<think>...</think>``, so the prompt the engine sees shows whether the reasoning a client
sent back reached the model.
"""
from __future__ import annotations

import copy

import aiohttp
import pytest
import pytest_asyncio

from tests.fixtures.gateway import AUTH_KEYS, raw_stream, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
REASONING = "The user's number is 42."
KEY = "k1:" + "s" * 32
A, B = ({"Authorization": f"Bearer {key}"} for key in AUTH_KEYS)


def reply(prompt: str) -> str:
    if f"<think>{REASONING}</think>" in prompt:
        return "I remembered my reasoning."
    if prompt.rstrip().endswith("[[think]]<|im_end|>\n<|im_start|>assistant"):
        return f"<think>{REASONING}</think>Noted."
    return "I have no earlier reasoning."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    templated = copy.copy(tokenizer)
    templated.chat_template = TEMPLATE
    prompts: list[str] = []

    def script(ids: list[int]) -> str:
        prompts.append(templated.decode(ids))
        return reply(prompts[-1])

    server = await serve_in_process(ScriptedEngine(templated, script), reasoning_parser="think")
    handle, runner = await start_gateway(server.address, tmp_path_factory.mktemp("reasoning"),
                                         api_keys=AUTH_KEYS, reasoning_key=(KEY,))
    yield handle, prompts
    await handle.client.close()
    await runner.cleanup()
    await server.stop()


FIRST = {"model": "default", "input": "[[think]]", "store": False, "reasoning": {"summary": "auto"},
         "include": ["reasoning.encrypted_content"]}


async def _post(handle, body: dict, headers: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(handle.base_url + "/responses", json=body,
                                                    headers=headers) as r:
        return r.status, await r.json()


async def _first_turn(handle) -> dict:
    """Turn 1, streamed as Codex does; the reasoning item as the client keeps it."""
    status, events, final = await raw_stream(handle, FIRST, A)  # raw_stream checks every event (SDK types)
    assert status == 200 and final["status"] == "completed"
    reasoning = final["output"][0]
    done = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert done == reasoning and reasoning["encrypted_content"].startswith("rsn1.k1.")
    assert REASONING not in reasoning["encrypted_content"]
    return reasoning


def _second_turn(reasoning: dict) -> dict:
    sent_back = dict(reasoning, summary=[])  # what the model sees must come from the ciphertext
    return {"model": "default", "store": False, "input": [
        {"role": "user", "content": "[[think]]"}, sent_back,
        {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "What was it?"}]}


async def test_summary_streams_the_reasoning_once(stack):
    handle, _ = stack
    status, events, final = await raw_stream(handle, FIRST, A)
    types = [e["type"] for e in events]
    assert status == 200 and "response.reasoning_summary_text.delta" in types
    assert not any(t.startswith("response.reasoning_text") for t in types)
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": REASONING}]
    assert final["output"][0]["content"] == [] and final["output"][1]["content"][0]["text"] == "Noted."


async def test_store_false_client_sends_encrypted_reasoning_back_and_the_model_sees_it(stack):
    handle, prompts = stack
    reasoning = await _first_turn(handle)
    status, body = await _post(handle, _second_turn(reasoning), A)
    assert status == 200, body
    assert body["output"][0]["content"][0]["text"] == "I remembered my reasoning."
    assert f"<|im_start|>assistant\n<think>{REASONING}</think>Noted.<|im_end|>" in prompts[-1]


async def test_without_encrypted_content_the_client_copy_is_what_the_model_sees(stack):
    handle, prompts = stack
    reasoning = await _first_turn(handle)
    plain = {k: v for k, v in reasoning.items() if k != "encrypted_content"}
    status, body = await _post(handle, _second_turn(dict(plain, summary=[])), A)
    assert status == 200 and body["output"][0]["content"][0]["text"] == "I have no earlier reasoning."
    assert "<think>" not in prompts[-1]  # the control: the check above can fail


def _tampered(token: str) -> str:
    head, body = token.rsplit(".", 1)
    middle = len(body) // 2
    return f"{head}.{body[:middle]}{'A' if body[middle] != 'A' else 'B'}{body[middle + 1:]}"


@pytest.mark.parametrize("change,headers,reason", [
    (_tampered, A, "failed authentication"),
    (lambda token: token, B, "failed authentication"),            # another tenant's key
    (lambda token: token.replace("rsn1.k1.", "rsn1.k9."), A, "does not hold"),
    (lambda token: "gAAAAABnot-ours", A, "not encrypted content issued by this server"),
])
async def test_tampered_or_foreign_content_is_400_naming_the_item(stack, change, headers, reason):
    handle, _ = stack
    reasoning = await _first_turn(handle)
    body = _second_turn(dict(reasoning, encrypted_content=change(reasoning["encrypted_content"])))
    status, error = await _post(handle, body, headers)
    assert status == 400, error
    assert error["error"]["param"] == "input[1].encrypted_content"
    assert error["error"]["code"] == "invalid_encrypted_content" and reason in error["error"]["message"]
