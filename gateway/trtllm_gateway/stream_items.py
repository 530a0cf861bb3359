"""Output item kinds of the Responses streaming state machine (``streaming.py``). Pure.

Protocol: OpenAI Responses output items and their SSE events (docs/responses-api.md §3).
Each :class:`ItemKind` says how its item opens (``output_item.added`` and parts), grows (one
delta event per piece) and closes (done events, the finished item): ``message`` (text),
``reasoning`` (raw text, or a summary part when ``reasoning.summary`` is set),
``function_call`` and ``custom_tool_call``. :data:`KINDS` is the registry by item type.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .custom_tools import InputDecoder, input_of

REASONING_EVENTS = {  # dialect -> (delta event, done event) for raw reasoning text
    "openai": ("response.reasoning_text.delta", "response.reasoning_text.done"),
    "open_responses": ("response.reasoning.delta", "response.reasoning.done"),
}


@dataclass
class OpenItem:
    kind: ItemKind
    index: int
    item_id: str
    pieces: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    logprobs: list[dict] = field(default_factory=list)
    error: str = ""
    raw: list[str] = field(default_factory=list)  # a custom tool call's argument pieces (JSON)
    decoder: InputDecoder | None = None          # ... and their decoder


@dataclass
class StreamState:
    response: dict                 # objects.new_response(...), status in_progress
    logprobs: bool = False         # include per-token logprobs in text events
    dialect: str = "openai"
    max_calls: int | None = None   # function calls past this many are dropped
    tool_names: frozenset[str] | None = None  # calls of other names are invalid (None: no check)
    seal: Callable[[str], str] | None = None  # reasoning text -> encrypted_content (None: not asked for)
    output: list[dict | None] = field(default_factory=list)  # finished items by output index
    before: int = 0  # output[:before] was finished before generation (a compaction item): start announces it
    current: OpenItem | None = None                          # the open message/reasoning item
    calls: dict[int, OpenItem] = field(default_factory=dict)  # open function calls by call index
    custom_tools: frozenset[str] = frozenset()  # offered names that are custom tools
    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # qualified -> (namespace, name)


class ItemKind:
    """One kind of output item: how it opens, grows and closes."""

    type = ""
    prefix = ""

    def added(self, st: StreamState, it: OpenItem) -> list[dict]:
        raise NotImplementedError

    def delta(self, st: StreamState, it: OpenItem, text: str, logprobs) -> dict:
        raise NotImplementedError

    def done(self, st: StreamState, it: OpenItem, status: str) -> tuple[dict, list[dict]]:
        """(the finished item, the events that close it before output_item.done)."""
        raise NotImplementedError

    def text_of(self, item: dict) -> str:
        """The streamed text of a finished item (what its deltas carried; replays use it)."""
        return ((item.get("content") or [{}])[0]).get("text", "")


class MessageKind(ItemKind):
    type, prefix = "message", "msg"

    def added(self, st, it):
        item = {"id": it.item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [_added(it, item), {"type": "response.content_part.added", "item_id": it.item_id,
                                   "output_index": it.index, "content_index": 0, "part": part}]

    def delta(self, st, it, text, logprobs):
        event_lps = []
        if logprobs:
            for lp in logprobs:
                event_lps.append(_event_logprob(lp))
                it.logprobs.append(_content_logprob(lp))
        return {"type": "response.output_text.delta", "item_id": it.item_id, "output_index": it.index,
                "content_index": 0, "delta": text, "logprobs": event_lps}

    def done(self, st, it, status):
        text = "".join(it.pieces)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": it.logprobs}
        item = {"id": it.item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}
        base = {"item_id": it.item_id, "output_index": it.index, "content_index": 0}
        return item, [
            {"type": "response.output_text.done", **base, "text": text, "logprobs": _event_logprobs(it.logprobs)},
            {"type": "response.content_part.done", **base, "part": part},
        ]


class ReasoningKind(ItemKind):
    """Raw reasoning text, or (``reasoning.summary`` set) the same text as summary part 0.

    There is no summarizer: with a summary requested the model's reasoning text itself is
    the summary. It then travels only as summary events and ``summary[0]`` (``content`` is
    ``[]``), never also as ``reasoning_text``, so a client that renders both shows it once.
    """

    type, prefix = "reasoning", "rs"

    def added(self, st, it):
        events = [_added(it, {"id": it.item_id, "type": "reasoning", "status": "in_progress",
                              "summary": [], "content": []})]
        if summarized(st):
            events.append({"type": "response.reasoning_summary_part.added", **_summary_ref(it),
                           "part": {"type": "summary_text", "text": ""}})
        return events

    def delta(self, st, it, text, logprobs):
        if summarized(st):
            return {"type": "response.reasoning_summary_text.delta", **_summary_ref(it), "delta": text}
        return {"type": REASONING_EVENTS[st.dialect][0], "item_id": it.item_id, "output_index": it.index,
                "content_index": 0, "delta": text}

    def done(self, st, it, status):
        text = "".join(it.pieces)
        item = {"id": it.item_id, "type": "reasoning", "status": status, "summary": [], "content": []}
        if summarized(st):
            part = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            part_done = {"type": "response.reasoning_summary_part.done", **_summary_ref(it), "part": part}
            if status != "completed":
                part_done["status"] = "incomplete"  # the part was cut short (the SDK's only other value)
            closing = [{"type": "response.reasoning_summary_text.done", **_summary_ref(it), "text": text},
                       part_done]
        else:
            item["content"] = [{"type": "reasoning_text", "text": text}]
            closing = [{"type": REASONING_EVENTS[st.dialect][1], "item_id": it.item_id,
                        "output_index": it.index, "content_index": 0, "text": text}]
        if st.seal is not None:
            item["encrypted_content"] = st.seal(text)
        return item, closing

    def text_of(self, item: dict) -> str:
        parts = item.get("summary") or item.get("content") or [{}]
        return parts[0].get("text", "")


def summarized(st: StreamState) -> bool:
    """Whether the request asked for reasoning summaries (read from the echoed ``reasoning``,
    so a replay or a job ending rebuilt from the stored response decides the same)."""
    return bool((st.response.get("reasoning") or {}).get("summary"))


def _summary_ref(it: OpenItem) -> dict:
    return {"item_id": it.item_id, "output_index": it.index, "summary_index": 0}


class FunctionCallKind(ItemKind):
    """A function call; its text is the arguments (JSON) as streamed."""

    type, prefix, field, events = "function_call", "fc", "arguments", "response.function_call_arguments"

    def _item(self, st: StreamState, it: OpenItem, status: str, text: str) -> dict:
        return {"id": it.item_id, "type": self.type, "status": status, "call_id": it.call_id,
                **_qualified(st, it.name), self.field: text}

    def added(self, st, it):
        return [_added(it, self._item(st, it, "in_progress", ""))]

    def delta(self, st, it, text, logprobs):
        return {"type": f"{self.events}.delta", "item_id": it.item_id, "output_index": it.index, "delta": text}

    def finished(self, st: StreamState, it: OpenItem) -> tuple[str, str]:
        """(the item's text, why the call is unusable or "")."""
        arguments = "".join(it.pieces)
        return arguments, it.error or _call_problem(st, it.name, arguments)

    def done(self, st, it, status):
        text, error = self.finished(st, it)
        item = self._item(st, it, "incomplete" if error else status, text)
        if error:
            item["error"] = {"code": INVALID_CALL, "message": error}
        named = {"name": item["name"]} if self.type == "function_call" else {}
        return item, [{"type": f"{self.events}.done", "item_id": it.item_id, "output_index": it.index,
                       **named, self.field: text}]

    def text_of(self, item: dict) -> str:
        return item.get(self.field, "")


class CustomToolCallKind(FunctionCallKind):
    """A custom tool call; its text is the decoded input. Live, ``it.raw`` holds the
    arguments as streamed; a replay (``idempotency.py``) has only ``pieces``. Arguments that
    are not ``{"input": <string>}`` keep what streamed as ``input`` (the raw arguments when
    nothing did, sent as one last delta) and name the raw arguments in ``error``."""

    type, prefix, field, events = "custom_tool_call", "ctc", "input", "response.custom_tool_call_input"

    def finished(self, st, it):
        text, error = "".join(it.pieces), it.error
        arguments = "".join(it.raw)
        decoded = input_of(arguments) if it.raw else text
        if decoded is None:
            error = error or f'the arguments are not {{"input": <string>}}: {arguments[:1000]}'
            if not text:
                text = arguments
                it.pieces.append(text)
        else:
            text = decoded
        if not error and st.tool_names is not None and it.name not in st.tool_names:
            error = f"the model called {it.name!r}, which is not among the offered tools"
        return text, error

    def done(self, st, it, status):
        streamed = "".join(it.pieces)
        item, closing = super().done(st, it, status)
        rest = item["input"][len(streamed):] if item["input"].startswith(streamed) else ""
        if rest:  # the raw arguments, when nothing could be decoded
            closing.insert(0, self.delta(st, it, rest, None))
        return item, closing


INVALID_CALL = "invalid_tool_call"


def _qualified(st: StreamState, name: str) -> dict:
    """``name`` (and ``namespace``) of a call item whose offered name is ``name``."""
    if name in st.namespaces:
        namespace, base = st.namespaces[name]
        return {"namespace": namespace, "name": base}
    return {"name": name}


def _call_problem(st: StreamState, name: str, arguments: str) -> str:
    """Why a call the service passed as good is unusable after all ("" when it is fine)."""
    if st.tool_names is not None and name not in st.tool_names:
        return f"the model called {name!r}, which is not among the offered tools"
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return "the arguments are not valid JSON"
    return "" if isinstance(parsed, dict) else "the arguments are not a JSON object"


MESSAGE, REASONING, FUNCTION_CALL = MessageKind(), ReasoningKind(), FunctionCallKind()
CUSTOM_TOOL_CALL = CustomToolCallKind()
KINDS: dict[str, ItemKind] = {k.type: k for k in (MESSAGE, REASONING, FUNCTION_CALL, CUSTOM_TOOL_CALL)}


def _added(it: OpenItem, item: dict) -> dict:
    return {"type": "response.output_item.added", "output_index": it.index, "item": item}


def _event_logprob(lp: pb.TokenLogprob) -> dict:
    return {"token": lp.token, "logprob": lp.logprob,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in lp.top_logprobs]}


def _content_logprob(lp: pb.TokenLogprob) -> dict:
    return {"token": lp.token, "bytes": list(lp.bytes), "logprob": lp.logprob,
            "top_logprobs": [{"token": t.token, "bytes": list(t.bytes), "logprob": t.logprob}
                             for t in lp.top_logprobs]}


def _event_logprobs(content_lps: list[dict]) -> list[dict]:
    return [{"token": lp["token"], "logprob": lp["logprob"],
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in lp["top_logprobs"]]}
            for lp in content_lps]


# ---- transitions ---------------------------------------------------------------------
