"""``POST /v1/responses/compact``: shrink a conversation window with a model-written summary.

Protocol (``openai.types.responses.CompactedResponse``): the body takes ``model``
(required; 400 ``param: "model"`` without it), ``input``, ``instructions``,
``previous_response_id`` (plus the ignored cache hints ``prompt_cache_key``,
``prompt_cache_retention``, ``service_tier``); the reply is ``{"id", "object":
"response.compaction", "created_at", "output": [...], "usage"}``. The caller sends
``output`` (plus its next message) as the ``input`` of its next create.

The window is the ``previous_response_id`` history followed by ``input``. It splits into:

* the leading system/developer messages, kept verbatim (they are the agent's standing
  instructions; truncation never drops them either);
* the most recent turn: the last user message and everything after it (tool calls and
  their outputs included), kept verbatim;
* everything in between, replaced by ONE ``compaction`` item (``compaction_item.py``)
  whose summary the model writes: a ``Generate`` call through the service over those
  items (earlier compaction items included, so summaries roll up), under a summarising
  system prompt, greedy, at most :data:`SUMMARY_MAX_TOKENS` tokens, with the oldest turns
  dropped first if even that prompt exceeds the context.

``output`` = kept instructions + [compaction] + recent turn, in that (chronological) order,
always with exactly one compaction item (Open Responses and the conformance suites expect
it); ``usage`` is the summarising call's. With nothing in between (a single turn) nothing is
summarised: the compaction item's summary is empty (the model is not shown it) and
``usage`` is zero. OpenAI documents its
``output`` as "all user messages, followed by a single compaction item"; here older user
messages are summarised too, which is what bounds the window: its size is the kept
messages plus at most :data:`SUMMARY_MAX_TOKENS`, whatever the length of the history.

The window is read as a create reads it (``generation.model_items``): item references are
resolved to the stored items, encrypted reasoning is opened for the summariser, and what an
earlier compaction item stands for is left out (``compaction_item.supersede``); the kept
items are returned as they were sent (a referenced item as the item it names).

**Inside a create** (``context_management: [{"type": "compaction", "compact_threshold"}]``,
:func:`on_threshold`, called by ``generation.prepare``): when the rendered input (the chat a
create would send, history expanded, tools included; one CountTokens call) is over the
threshold -- the smallest ``compact_threshold`` given, else :data:`DEFAULT_THRESHOLD_SHARE`
of the model's context, at least 1,000 -- everything after the leading instructions
(older turns and the current one) is summarised the same way, and the model generates
from leading instructions + [compaction] + the current turn. The compaction item is the
response's first output item, so it stands for the whole input before it when the client
sends it back (OpenAI: "the compaction item carries context needed for the next window").
Nothing is compacted when no turn is older than the current one (apart from an earlier
compaction item): the summary could not make the prompt smaller.
"""
from __future__ import annotations

import time

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import compaction_item, driver, generation
from .context import Gateway
from .errors import ApiError
from .ids import new_id
from .metrics import TokenClock
from .objects import new_response, usage
from .request import CreateRequest, parse_create
from .request_options import MIN_COMPACT_THRESHOLD
from .streaming import StreamState
from .translate import build_chat, chat_messages, fit_context

SUMMARY_MAX_TOKENS = 512
#: ``compact_threshold: null``: compact once the rendered input passes this share of the context.
DEFAULT_THRESHOLD_SHARE = 0.8
COMPACT_FIELDS = ("model", "input", "instructions", "previous_response_id", "prompt_cache_key",
                  "prompt_cache_retention", "service_tier", "prompt_cache_options", "image")
SUMMARISER = ("You condense conversations. Write a concise summary of the conversation you are given, "
              "keeping every fact, name, number, decision, open question and tool result that later "
              "turns may need. Write plain prose without a preamble.")
REQUEST = "Summarise the conversation above."


def parse(body: dict) -> CreateRequest:
    for name in body:
        if name not in COMPACT_FIELDS:
            raise ApiError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
    req = parse_create(body, for_count=True)
    if not req.model:
        raise ApiError("invalid_request", "Missing required parameter: 'model'.", param="model")
    return req


def cuts(items: list[dict]) -> tuple[int, int]:
    """(end of the leading instructions, start of the most recent turn): the older items
    to summarise are ``items[lead:cut]``."""
    lead = compaction_item.leading(items)
    users = [i for i in range(lead, len(items)) if items[i]["type"] == "message" and items[i]["role"] == "user"]
    return lead, users[-1] if users else len(items)


def summary_chat(older: list[dict], instructions: str | None) -> pb.Chat:
    system = SUMMARISER + (f"\n\nThe conversation ran under these instructions:\n{instructions}"
                           if instructions else "")
    ask = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": REQUEST}]}
    return pb.Chat(messages=chat_messages(system, older + [ask]))


class _Collect:
    """The driver's sink for a summary: nothing to deliver or store (output stays in the state)."""

    committed = False

    async def open(self) -> None:
        pass

    async def send(self, events: list[dict]) -> None:
        pass

    async def persist(self, resp: dict, closing: list[dict]) -> list[dict]:
        return closing

    async def deliver(self, closing: list[dict]) -> None:
        pass

    def abandon(self, resp: dict, closing: list[dict]) -> None:
        pass


async def summarise(gw: Gateway, req: CreateRequest, tenant: str, chat: pb.Chat) -> tuple[str, dict]:
    """(summary text, usage) from one greedy Generate call through the driver."""
    chat = await fit_context(chat, gw.client.count_tokens, SUMMARY_MAX_TOKENS)
    request = pb.GenerateRequest(request_id=new_id("cmp"), chat=chat, sampling=pb.SamplingParams(
        temperature=0.0, top_p=1.0, max_tokens=SUMMARY_MAX_TOKENS))
    info = await gw.client.model_info()
    state = StreamState(new_response(req, request.request_id, info.model_id, int(time.time())))
    g = generation.Generation(req, tenant, request, state, TokenClock(gw.metrics, time.perf_counter()),
                              SUMMARY_MAX_TOKENS)
    resp = await driver.run(gw, g, _Collect())
    if resp["status"] not in ("completed", "incomplete"):
        raise ApiError("server_error", "The model failed while writing the compaction summary.")
    text = "".join(part["text"] for item in resp["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")
    return text.strip(), resp["usage"] or usage(0, 0, 0, 0)


async def compact(gw: Gateway, body: dict, tenant: str) -> dict:
    req = parse(body)
    generation.resolve_model(req.model, await gw.client.model_info())
    history = await generation.load_history(gw, req, tenant)
    seen = await generation.model_items(gw, req, tenant, history)  # as the model reads it
    window = compaction_item.supersede(history + req.input.items)  # as sent (references resolved): returned
    lead, cut = cuts(window)
    summary, spent = "", usage(0, 0, 0, 0)
    if lead < cut:
        summary, spent = await summarise(gw, req, tenant, summary_chat(seen[lead:cut], req.instructions))
    output = window[:lead] + [compaction_item.new_item(summary)] + window[cut:]
    return {"id": new_id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": output, "usage": spent}


def _entries(req: CreateRequest) -> list[dict]:
    """``req``'s compaction entries of ``context_management`` (none: it asks for no compaction)."""
    return [e for e in req.context_management if e.get("type") == "compaction"]


def threshold(req: CreateRequest, context: int) -> int | None:
    """The rendered-input size above which ``req`` compacts; None when it asks for no compaction."""
    entries = _entries(req)
    return _limit(entries, context) if entries else None


def _limit(entries: list[dict], context: int) -> int:
    given = [e["compact_threshold"] for e in entries if e.get("compact_threshold") is not None]
    return min(given) if given else max(MIN_COMPACT_THRESHOLD, int(context * DEFAULT_THRESHOLD_SHARE))


async def on_threshold(gw: Gateway, req: CreateRequest, tenant: str, items: list[dict],
                       chat: pb.Chat) -> tuple[pb.Chat, list[dict]]:
    """(the chat to generate from, the output items before the model's): ``chat`` and []
    under the threshold; over it, the compacted chat and [the compaction item].
    ``items``: the window as the model reads it (``generation.model_items``), ``chat`` its chat."""
    entries = _entries(req)
    if not entries:
        return chat, []  # no CountTokens call for requests that do not ask
    lead, cut = cuts(items)
    if all(item["type"] == "compaction" for item in items[lead:cut]):
        return chat, []  # nothing older than this turn to summarise
    tokens, context = await gw.client.count_tokens(chat)
    if tokens <= _limit(entries, context):
        return chat, []
    summary, _ = await summarise(gw, req, tenant, summary_chat(items[lead:], req.instructions))
    item = compaction_item.new_item(summary)
    return build_chat(req, items[:lead] + [item] + items[cut:]), [item]
