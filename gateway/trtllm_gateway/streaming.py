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

import time

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .custom_tools import InputDecoder
from .ids import new_id
from .objects import usage
from .stream_items import (  # noqa: F401 - re-exported: the state machine's public names
    CUSTOM_TOOL_CALL,
    FUNCTION_CALL,
    INVALID_CALL,
    KINDS,
    MESSAGE,
    REASONING,
    ItemKind,
    OpenItem,
    StreamState,
    _added,
)


def start(st: StreamState) -> list[dict]:
    """The two opening events (their snapshots have no output yet), then added/done for each
    item finished before generation began (``st.before``: a ``compaction`` item, ``compaction.py``)."""
    snapshot = dict(st.response, output=[])
    events: list[dict] = [{"type": "response.created", "response": snapshot},
                          {"type": "response.in_progress", "response": snapshot}]
    for index, item in enumerate(st.output[:st.before]):
        events += [{"type": "response.output_item.added", "output_index": index, "item": item},
                   {"type": "response.output_item.done", "output_index": index, "item": item}]
    return events


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
