"""How a job that will not (or may not) generate is ended, from what its event log says.

Used when a replica claims a job it must not simply run (``background.py`` decides):

* ``cancel``: a cancel request was seen. Open items are closed (``incomplete``) and the
  response is stored ``cancelled``. There is no terminal event for cancellation in the
  Responses event set, so the log just ends after the closing events.
* ``fail``: the job was interrupted after part of its output was logged (its replica
  died: re-running it would contradict what followers already read), it is a stored
  stream whose replica died, or it ran out of attempts. Open items are closed and the log
  ends with ``response.failed`` (``error.code: server_error``), the partial output kept.
* ``settle``: the response is already final (its replica died after saving it): the job
  is marked done, with the terminal event appended if the log lacks it.

The partial state is rebuilt by replaying the logged item events (:func:`restore`) into a
``StreamState``; ``streaming.finalize`` then closes it exactly as a live stream would, so
a replayed stream stays valid (sequence numbers continue from the log's last one). Items
without deltas (a ``compaction`` item, logged added then done) are restored whole. The
rebuilt state seals reasoning as the live one would (:func:`sealer`): a reasoning item a
job ending closes carries ``encrypted_content`` when the request's ``include`` asked for it
(read from the job's spec: a background job's create body, a stored stream's ``include``).
"""
from __future__ import annotations

from collections.abc import Callable

from . import reasoning_crypto
from .streaming import FUNCTION_CALL, KINDS, TERMINAL, OpenItem, StreamState, finalize, start

MESSAGES = {
    "stream": "The gateway serving this stream stopped before the response finished.",
    "interrupted": "The gateway running this background response stopped mid-generation; it "
                   "was not restarted because part of its output had already been streamed.",
    "attempts": "The background response was not run: {n} attempts were interrupted.",
}


def _open_item(st: StreamState, event: dict) -> None:
    item, index = event["item"], event["output_index"]
    kind = KINDS.get(item.get("type"))
    if kind is None or index != len(st.output):
        return
    it = OpenItem(kind=kind, index=index, item_id=item["id"], call_id=item.get("call_id", ""),
                  name=item.get("name", ""))
    st.output.append(None)
    if kind is FUNCTION_CALL:
        st.calls[index] = it
    else:
        st.current = it


def _find(st: StreamState, index) -> OpenItem | None:
    if st.current is not None and st.current.index == index:
        return st.current
    return st.calls.get(index)


def sealer(keys: tuple[str, ...], tenant: str, spec: dict) -> Callable[[str], str] | None:
    """``StreamState.seal`` for a job rebuilt from its log: as its request's ``include`` asked."""
    include = (spec.get("body") or {}).get("include") or []
    return reasoning_crypto.sealer(keys, tenant, include)


def _item_done(st: StreamState, event: dict) -> None:
    index, item = event["output_index"], event["item"]
    if item.get("type") not in KINDS and index == len(st.output):
        st.output.append(item)  # an item without deltas (compaction): finished as announced
        return
    if _find(st, index) is None or index >= len(st.output):
        return
    st.output[index] = item
    if st.current is not None and st.current.index == index:
        st.current = None
    st.calls.pop(index, None)


def restore(st: StreamState, events: list[dict]) -> None:
    """Replay logged item events into ``st`` (open items get their text so far)."""
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            _open_item(st, event)
        elif kind == "response.output_item.done":
            _item_done(st, event)
        elif kind.endswith(".delta") and "output_index" in event:
            it = _find(st, event["output_index"])
            if it is not None:
                it.pieces.append(event.get("delta", ""))


def has_output(events: list[dict]) -> bool:
    return any(e["type"] == "response.output_item.added" for e in events)


def missing_opening(st: StreamState, events: list[dict]) -> list[dict]:
    """The opening events (``streaming.start``: created, in_progress, then any item finished
    before generation) of types not yet in the log (a replay needs them all)."""
    have = {e["type"] for e in events}
    return [e for e in start(st) if e["type"] not in have]


def cancelled(st: StreamState, replay: list[dict]) -> tuple[dict, list[dict]]:
    """(the cancelled response, the events closing its open items). ``replay``: the logged
    events to rebuild ``st`` from ([] when ``st`` is the live state)."""
    restore(st, replay)
    return finalize(st, cancelled=True)


def failed(st: StreamState, logged: list[dict], message: str,
           replay: list[dict]) -> tuple[dict, list[dict]]:
    """(the failed response, [missing opening..., closing events..., response.failed]).
    ``replay`` empty with events logged: ``st`` is the live state, whose opening (and any
    item finished before generation) the run logged itself."""
    opening = missing_opening(st, logged) if replay or not logged else []
    restore(st, replay)
    resp, closing = finalize(st, error=message)
    return resp, opening + closing


def settled(response: dict, events: list[dict]) -> list[dict]:
    """The terminal event a final response's log lacks, if any."""
    event = TERMINAL.get(response.get("status") or "")
    if event is None or any(e["type"] == event for e in events):
        return []
    return [{"type": event, "response": response}]
