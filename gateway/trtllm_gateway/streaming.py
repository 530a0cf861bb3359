"""The Responses streaming state machine: service deltas in, Responses events out. Pure.

Protocol: OpenAI Responses SSE events (docs/responses-api.md §3). Per response:

    start(state)                 -> [response.created, response.in_progress]
    on_delta(state, pb.Delta)    -> item events, in output order
    finalize(state, pb.Final)    -> (response, [closing item events..., terminal event])

Output items come from a registry of kinds (:data:`KINDS`): ``message`` (text),
``reasoning`` (raw reasoning text) and ``function_call`` (tool-call argument pieces). A
piece of a new kind closes the open item(s) first, so items never interleave except the
function calls of one turn, which stay open together until something else arrives. For a
text message the events are::

    output_item.added -> content_part.added -> output_text.delta* -> output_text.done
    -> content_part.done -> output_item.done

Reasoning: ``output_item.added -> reasoning_text.delta* -> reasoning_text.done ->
output_item.done`` (``--reasoning-dialect open_responses``: ``reasoning.delta/done``). When
the request sets ``reasoning.summary``, the same text is the item's one summary part
instead (there is no summarizer model): ``output_item.added ->
reasoning_summary_part.added -> reasoning_summary_text.delta* -> reasoning_summary_text.done
-> reasoning_summary_part.done -> output_item.done``, ``summary: [{summary_text}]``,
``content: []`` -- never both, so no client renders it twice. ``StreamState.seal`` (set when
``include`` asks for ``reasoning.encrypted_content``) adds ``encrypted_content`` to the done
item (``reasoning_crypto.py``).

Function calls: the service's tool parser streams ``ToolCallDelta`` pieces (id and name on
the first). A call whose piece carries ``error`` (arguments not a JSON object, unknown
function, output ended inside the call) -- or whose arguments the gateway finds not to be
a JSON object, or whose name is not among the offered tools -- closes with ``status:
"incomplete"``, its raw ``arguments`` kept, and the extension field ``error: {code:
"invalid_tool_call", message}`` (absent on good calls). Calls past the turn's limit
(``parallel_tool_calls: false`` -> 1, ``max_tool_calls``; ``tools.call_limit``) are
dropped: no events, no item.

Custom tools (``custom_tools.py``) are called like functions with arguments ``{"input":
"<text>"}``: a call whose name is one of ``StreamState.custom_tools`` is a
``custom_tool_call`` item (``ctc_``) instead, whose ``response.custom_tool_call_input.delta``
events carry the decoded text as it streams and whose ``input`` is the finished arguments'
string (arguments of another shape: ``status: "incomplete"`` and ``error``, the raw
arguments as ``input``). A call of a namespaced tool (``StreamState.namespaces``: qualified
name -> (namespace, name)) carries ``namespace`` and the tool's own ``name``.

Item ids (``msg_``/``rs_``/``fc_``/``ctc_``) are minted once at ``added`` and reused in every later
event, in the final response and in the store. ``finalize`` is the only place that finishes
the response object, for the JSON reply, the terminal event and the stored copy alike:
STOP/TOOL_CALLS -> ``completed``; LENGTH -> ``incomplete`` (reason ``max_output_tokens``,
partial output kept, open items ``incomplete``); ERROR, a service-side CANCELLED or a
failed RPC -> ``failed`` with an ``error``; a cancellation (the client went away, a cancel
request) -> ``cancelled``: open items close ``incomplete``, no terminal event.

No sequence numbers here: ``sse.py`` assigns them as it writes. No I/O, no clock except
``finalize``'s ``now`` default.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .custom_tools import InputDecoder, input_of
from .ids import new_id
from .objects import usage

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

def start(st: StreamState) -> list[dict]:
    """The two opening events; their snapshots have no output yet."""
    snapshot = dict(st.response, output=[])
    return [{"type": "response.created", "response": snapshot},
            {"type": "response.in_progress", "response": snapshot}]


def _open(st: StreamState, kind: ItemKind, events: list[dict], **extra) -> OpenItem:
    it = OpenItem(kind=kind, index=len(st.output), item_id=new_id(kind.prefix), **extra)
    st.output.append(None)
    events.extend(kind.added(st, it))
    return it


def _close(st: StreamState, it: OpenItem, status: str, events: list[dict]) -> None:
    item, closing = it.kind.done(st, it, status)
    events.extend(closing)
    events.append({"type": "response.output_item.done", "output_index": it.index, "item": item})
    st.output[it.index] = item


def _close_all(st: StreamState, status: str, events: list[dict]) -> None:
    if st.current is not None:
        _close(st, st.current, status, events)
        st.current = None
    for index in sorted(st.calls):
        _close(st, st.calls[index], status, events)
    st.calls.clear()


def _text(st: StreamState, kind: ItemKind, text: str, logprobs, events: list[dict]) -> None:
    it = st.current
    if it is None or it.kind is not kind:
        _close_all(st, "completed", events)
        it = st.current = _open(st, kind, events)
    it.pieces.append(text)
    events.append(kind.delta(st, it, text, logprobs))


def _call(st: StreamState, call: pb.ToolCallDelta, events: list[dict]) -> None:
    if st.max_calls is not None and call.index >= st.max_calls:
        return
    it = st.calls.get(call.index)
    if it is None:
        if st.current is not None:
            _close(st, st.current, "completed", events)
            st.current = None
        custom = call.name in st.custom_tools
        it = st.calls[call.index] = _open(st, CUSTOM_TOOL_CALL if custom else FUNCTION_CALL, events,
                                          call_id=call.id or new_id("call"), name=call.name,
                                          decoder=InputDecoder() if custom else None)
    if call.error and not it.error:
        it.error = call.error
    piece = call.arguments_delta
    if piece and it.decoder is not None:
        it.raw.append(piece)
        piece = it.decoder.feed(piece)
    if piece:
        it.pieces.append(piece)
        events.append(it.kind.delta(st, it, piece, None))


def on_delta(st: StreamState, delta: pb.Delta) -> list[dict]:
    """Events for one service Delta (possibly none, e.g. for a token-ids-only delta)."""
    events: list[dict] = []
    if delta.reasoning_text:
        _text(st, REASONING, delta.reasoning_text, None, events)
    if delta.text:
        _text(st, MESSAGE, delta.text, delta.logprobs if st.logprobs else None, events)
    for call in delta.tool_calls:
        _call(st, call, events)
    return events


# finish reason -> (response status, item status of items still open)
FINISH: dict[int, tuple[str, str]] = {
    pb.FINISH_REASON_UNSPECIFIED: ("completed", "completed"),
    pb.FINISH_REASON_STOP: ("completed", "completed"),
    pb.FINISH_REASON_TOOL_CALLS: ("completed", "completed"),
    pb.FINISH_REASON_LENGTH: ("incomplete", "incomplete"),
    pb.FINISH_REASON_CANCELLED: ("failed", "incomplete"),
    pb.FINISH_REASON_ERROR: ("failed", "incomplete"),
}
TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
_CANCELLED_BY_SERVICE = "The inference service cancelled the request (it may be shutting down)."


def finalize(st: StreamState, final: pb.Final | None = None, *, error: str | None = None,
             cancelled: bool = False, now: float | None = None) -> tuple[dict, list[dict]]:
    """Finish the response: (response object, [closing events..., terminal event]).

    Exactly one outcome: ``final``, the service's Final (completed, incomplete or failed by
    its finish reason); ``error``, a failure without one (the RPC broke); ``cancelled``, the
    client or a cancel request stopped it: open items close ``incomplete`` and there is no
    terminal event (the Responses event set has none for cancellation).
    """
    if (final is not None) + (error is not None) + cancelled != 1:
        raise ValueError("finalize takes exactly one outcome: final, error or cancelled")
    if final is not None:
        status, item_status = FINISH.get(final.finish_reason, ("completed", "completed"))
        if final.finish_reason == pb.FINISH_REASON_ERROR:
            error = final.error_message or "The model failed while generating the response."
        elif final.finish_reason == pb.FINISH_REASON_CANCELLED:
            error = _CANCELLED_BY_SERVICE
    elif error is not None:
        status, item_status = "failed", "incomplete"
    else:
        status, item_status = "cancelled", "incomplete"
    events: list[dict] = []
    _close_all(st, item_status, events)
    resp = dict(st.response, status=status, output=[item for item in st.output if item is not None])
    if final is not None and final.HasField("usage"):
        u = final.usage
        resp["usage"] = usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens)
    if status == "completed":
        resp["completed_at"] = int(time.time() if now is None else now)
    elif status == "incomplete":
        resp["incomplete_details"] = {"reason": "max_output_tokens"}
    elif status == "failed":
        resp["error"] = {"code": "server_error", "message": error}
    if status != "cancelled":
        events.append({"type": TERMINAL[status], "response": resp})
    return resp, events
