"""``context_management`` compaction inside a create: over the threshold the gateway compacts
the window first, the compaction item leads the output, and the model generates from the
compacted window. The scripted engine's prompts show what each model call read.

The "model" answers a summarising prompt (``compaction.REQUEST``) with :data:`SUMMARY`, and
any other prompt by saying whether it read the summary, the long old turn, or neither.
"""
from __future__ import annotations

import aiohttp
import pytest_asyncio
from openai.types.responses import Response

from tests.fixtures.gateway import check_stream, message_text, plain, raw_stream
from tests.integration.scripted_stack import start_stack
from tests.integration.test_background import final, get, post, replay
from trtllm_gateway import compaction, compaction_item
from trtllm_gateway.context import GATEWAY
from trtllm_gateway.websocket import CONNECTION

SUMMARY = "SUMMARY: the user, Ada, told a long story about fruit."
OLD = "Once upon a time " + " ".join(f"apple{i}" for i in range(1200))  # about 2,500 tokens
QUESTION = "What do you remember?"
COMPACT = [{"type": "compaction", "compact_threshold": 1000}]


def reply(prompt: str) -> str:
    if compaction.REQUEST in prompt:
        return SUMMARY
    if "apple1199" in prompt:
        return "I read the whole story."
    return "I read the summary." if SUMMARY in prompt else "I read nothing earlier."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("compaction-threshold"), reply,
                          event_poll_interval_s=0.05)
    yield s
    await s.stop()


def window(question: str = QUESTION) -> list[dict]:
    return [{"role": "developer", "content": "You help Ada."},
            {"role": "user", "content": OLD}, {"role": "assistant", "content": "What a story."},
            {"role": "user", "content": question}]


async def test_over_the_threshold_the_compaction_item_comes_first_and_the_model_reads_the_summary(stack):
    before = len(stack.prompts)
    resp = plain(await stack.handle.client.responses.create(model="default", input=window(),
                                                             context_management=COMPACT))
    Response.model_validate(resp)
    assert [i["type"] for i in resp["output"]] == ["compaction", "message"]
    assert compaction_item.decode(resp["output"][0]["encrypted_content"]) == SUMMARY
    assert message_text(resp) == "I read the summary."
    summarised, generated = stack.prompts[before:]
    # the summary covers the older turns and the current one; the instructions stay verbatim
    assert "apple1199" in summarised and QUESTION in summarised and "You help Ada." not in summarised
    assert "apple1199" not in generated and SUMMARY in generated
    assert "You help Ada." in generated and generated.rstrip().endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant")
    assert (await get(stack.handle, resp["id"]))[1] == resp  # stored as answered


async def test_under_the_threshold_nothing_is_compacted(stack):
    before = len(stack.prompts)
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": QUESTION}]
    resp = await stack.handle.client.responses.create(model="default", input=short, context_management=COMPACT)
    assert [i.type for i in resp.output] == ["message"] and len(stack.prompts) == before + 1
    # and without context_management, a long window is not compacted either
    resp = await stack.handle.client.responses.create(model="default", input=window())
    assert [i.type for i in resp.output] == ["message"] and resp.output_text == "I read the whole story."


async def test_a_single_long_turn_is_not_compacted(stack):
    """Nothing is older than the current turn: a summary could not make the prompt smaller."""
    resp = await stack.handle.client.responses.create(
        model="default", input=[{"role": "user", "content": OLD}], context_management=COMPACT)
    assert [i.type for i in resp.output] == ["message"]


async def test_the_stream_announces_the_compaction_item_first_and_agrees_with_the_store(stack):
    status, events, resp = await raw_stream(stack.handle, {"model": "default", "input": window(),
                                                           "context_management": COMPACT})
    assert status == 200, resp
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.output_item.done"]
    assert events[2]["item"] == events[3]["item"] == resp["output"][0] and events[2]["output_index"] == 0
    assert resp["output"][0]["type"] == "compaction" and message_text(resp) == "I read the summary."
    assert all(e["output_index"] == 1 for e in events[4:-1] if "output_index" in e)
    assert (await get(stack.handle, resp["id"]))[1] == resp
    assert check_stream(await replay(stack.handle, resp["id"])) == resp  # the stored event log too


async def test_the_compaction_item_sent_back_stands_for_what_it_replaced(stack):
    first = plain(await stack.handle.client.responses.create(
        model="default", input=window(), context_management=COMPACT, store=False))
    # stateless: the client appends the output (compaction item included) and its next message
    nxt = window() + first["output"] + [{"role": "user", "content": "Go on."}]
    resp = await stack.handle.client.responses.create(model="default", input=nxt, store=False)
    assert resp.output_text == "I read the summary."
    prompt = stack.prompts[-1]
    assert "apple1199" not in prompt and QUESTION not in prompt  # replaced by the summary
    assert SUMMARY in prompt and "You help Ada." in prompt and "I read the summary." in prompt


async def test_previous_response_id_chains_read_the_compacted_window(stack):
    first = await stack.handle.client.responses.create(model="default", input=window(),
                                                       context_management=COMPACT)
    before = len(stack.prompts)
    resp = await stack.handle.client.responses.create(model="default", previous_response_id=first.id,
                                                      input="Go on.", context_management=COMPACT)
    # the window (instructions, summary, answer, new message) is under the threshold: no new compaction
    assert [i.type for i in resp.output] == ["message"] and resp.output_text == "I read the summary."
    assert len(stack.prompts) == before + 1 and "apple1199" not in stack.prompts[-1]


async def test_a_websocket_turn_is_compacted_and_its_remembered_history_stays_compact(stack):
    from tests.integration.test_websocket import create, read_response

    async with aiohttp.ClientSession() as session, \
            session.ws_connect(stack.handle.base_url.replace("http", "ws", 1) + "/responses") as ws:
        await ws.send_json(create(input=window(), store=False, context_management=COMPACT))
        events, first = await read_response(ws)  # checked like an SSE stream
        assert [e["type"] for e in events[2:4]] == ["response.output_item.added", "response.output_item.done"]
        assert [i["type"] for i in first["output"]] == ["compaction", "message"]
        # store: false, continued from the socket's memory: the summary stands for the old turns
        await ws.send_json(create(input="Go on.", store=False, previous_response_id=first["id"]))
        _, second = await read_response(ws)
        assert message_text(second) == "I read the summary." and "apple1199" not in stack.prompts[-1]
        # what the socket remembers is pruned too: the superseded turns are gone, not just unread
        (server_ws,) = stack.handle.app[GATEWAY].sockets
        remembered = server_ws[CONNECTION].remembered
        kept = [{"role": "developer", "content": "You help Ada."}, first["output"][0]]  # instructions, summary
        assert [_plain(i) for i in remembered[first["id"]]] == kept + [_plain(first["output"][1])]
        assert [_plain(i) for i in remembered[second["id"]]] == kept + [
            _plain(first["output"][1]), {"role": "user", "content": "Go on."}, _plain(second["output"][0])]
        assert "apple1199" not in str(remembered) and QUESTION not in str(remembered)
        # and the pruned memory still continues: a third turn reads the summary and both answers
        await ws.send_json(create(input="And then?", store=False, previous_response_id=second["id"]))
        _, third = await read_response(ws)
    assert message_text(third) == "I read the summary."
    prompt = stack.prompts[-1]
    assert "apple1199" not in prompt and "Go on." in prompt and prompt.count("I read the summary.") == 2


def _plain(item: dict) -> dict:
    """An item without the fields the gateway adds to what it remembers (ids, status)."""
    if item.get("type", "message") != "message":
        return item
    content = item["content"]
    if isinstance(content, list) and len(content) == 1 and content[0]["type"] in ("input_text", "output_text"):
        content = content[0]["text"]
    return {"role": item["role"], "content": content}


async def test_background_responses_are_compacted_at_create(stack):
    status, created = await post(stack.handle, {"model": "default", "input": window(), "background": True,
                                                "context_management": COMPACT})
    assert status == 200 and created["status"] == "queued"
    done = await final(stack.handle, created["id"])
    assert [i["type"] for i in done["output"]] == ["compaction", "message"]
    assert message_text(done) == "I read the summary."
    assert compaction_item.decode(done["output"][0]["encrypted_content"]) == SUMMARY
    assert check_stream(await replay(stack.handle, created["id"])) == done


def test_threshold_defaults_to_a_share_of_the_context():
    from trtllm_gateway.request import parse_create

    def req(entries):
        return parse_create({"model": "m", "input": "x", "context_management": entries})

    assert compaction.threshold(req([{"type": "compaction"}]), 8192) == int(8192 * compaction.DEFAULT_THRESHOLD_SHARE)
    assert compaction.threshold(req([{"type": "compaction", "compact_threshold": None}]), 1024) == 1000
    assert compaction.threshold(req([{"type": "compaction", "compact_threshold": 5000},
                                     {"type": "compaction", "compact_threshold": 2000}]), 8192) == 2000
    assert compaction.threshold(parse_create({"model": "m", "input": "x"}), 8192) is None
