"""``/v1/responses/compact`` and ``/v1/responses/input_tokens`` read encrypted reasoning as a
create does (``generation.model_items``): opened for the model, 400 when it does not open.

The stack is test_reasoning_roundtrip's: a reasoning model's kind of chat template (earlier
assistant turns render ``<think>reasoning</think>``), a configured ``--reasoning-key``, two
tenants.
"""
from __future__ import annotations

import aiohttp
import pytest

from tests.integration.test_reasoning_roundtrip import REASONING, A, _first_turn, _tampered, stack  # noqa: F401
from trtllm_gateway import compaction


async def _post(handle, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(handle.base_url + path, json=body, headers=A) as r:
        return r.status, await r.json()


def _window(reasoning: dict, *, later: bool = False) -> list[dict]:
    """The first turn as a stateless client keeps it (the reasoning's own text emptied, so
    only its encrypted content can show it), then a new question."""
    sent_back = dict(reasoning, summary=[])
    turn = [{"role": "user", "content": "[[think]]"}, sent_back, {"role": "assistant", "content": "Noted."}]
    if later:  # the reasoning is in the running turn, which compaction keeps verbatim
        return [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}] + turn
    return turn + [{"role": "user", "content": "What was it?"}]


async def test_input_tokens_counts_the_opened_reasoning(stack):  # noqa: F811
    handle, _ = stack
    reasoning = await _first_turn(handle)
    status, sealed = await _post(handle, "/responses/input_tokens", {"model": "default", "input": _window(reasoning)})
    assert status == 200, sealed
    plain = dict(reasoning, summary=[], content=[{"type": "reasoning_text", "text": REASONING}])
    plain.pop("encrypted_content")
    window = _window(reasoning)
    window[1] = plain
    status, shown = await _post(handle, "/responses/input_tokens", {"model": "default", "input": window})
    assert status == 200 and sealed["input_tokens"] == shown["input_tokens"]  # the same prompt
    window[1] = dict(plain, content=[])
    _, emptied = await _post(handle, "/responses/input_tokens", {"model": "default", "input": window})
    assert emptied["input_tokens"] < sealed["input_tokens"]  # the control: the reasoning counts


async def test_compact_summarises_the_opened_reasoning(stack):  # noqa: F811
    handle, prompts = stack
    reasoning = await _first_turn(handle)
    status, body = await _post(handle, "/responses/compact", {"model": "default", "input": _window(reasoning)})
    assert status == 200, body
    summarised = prompts[-1]
    assert compaction.REQUEST in summarised and f"<think>{REASONING}</think>Noted." in summarised


async def test_compact_keeps_the_running_turns_reasoning_as_sent(stack):  # noqa: F811
    handle, _ = stack
    reasoning = await _first_turn(handle)
    window = _window(reasoning, later=True)
    status, body = await _post(handle, "/responses/compact", {"model": "default", "input": window})
    assert status == 200, body
    assert [i["type"] for i in body["output"]] == ["compaction", "message", "reasoning", "message"]
    kept = body["output"][2]
    assert kept["encrypted_content"] == reasoning["encrypted_content"]  # never returned opened
    assert kept["summary"] == [] and kept["content"] == []


@pytest.mark.parametrize("path", ["/responses/compact", "/responses/input_tokens"])
async def test_content_that_does_not_open_is_400_naming_the_item(stack, path):  # noqa: F811
    handle, _ = stack
    reasoning = await _first_turn(handle)
    window = _window(dict(reasoning, encrypted_content=_tampered(reasoning["encrypted_content"])))
    status, error = await _post(handle, path, {"model": "default", "input": window})
    assert status == 400, error
    assert error["error"]["param"] == "input[1].encrypted_content"
    assert error["error"]["code"] == "invalid_encrypted_content"
