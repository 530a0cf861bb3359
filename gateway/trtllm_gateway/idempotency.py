"""``Idempotency-Key`` on ``POST /v1/responses``: a retried create returns the original.

Protocol (the de-facto HTTP convention, as Stripe and the IETF draft
``draft-ietf-httpapi-idempotency-key-header`` use it):

* The key (1..255 printable ASCII characters, else 400) is scoped to the tenant. The
  request's fingerprint is the SHA-256 of its canonical JSON body (keys sorted), so key
  order and whitespace do not matter.
* First use: the key is claimed (``running``) atomically in the store, the create runs as
  usual, and when the response ends its final object is recorded with the key (``done``)
  before the reply's terminal event or JSON is sent. A create that fails with an HTTP
  error, or whose client went away (``cancelled``), releases the key: nothing was
  delivered, so the retry runs again.
* Retry, same body, finished: the recorded response, with ``Idempotent-Replayed: true``.
  ``stream: false`` gets it as JSON; ``stream: true`` gets it replayed as a complete SSE
  stream: the same events the original produced (one delta per item instead of many),
  built by the same ``streaming.py`` item kinds and numbered by the same ``sse.py``
  writer. The replay costs no generation. A background create records the ``queued``
  response it answered; its streamed retry follows the response's event log
  (``events.follow``), as the original did.
* Retry while the first is still running: 409, code ``idempotency_request_in_progress``,
  ``Retry-After: 1`` (no waiting: the first may run on another replica for minutes). A
  claim older than ``--request-timeout-s`` + 60 s is considered abandoned (its replica
  died) and the retry takes it over.
* Same key, different body: 409, code ``idempotency_key_reused``.
* Keys expire with the store's retention (``--store-retention-s``), like responses; a key's
  recorded response is a copy that lives as long as the key (also for ``store: false``:
  sending a key asks the server to remember the outcome).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time

from aiohttp import web

from .context import GATEWAY, TENANT, Gateway
from .errors import ApiError
from .request import parse_json_object
from .sse import SSEWriter, dumps
from .streaming import KINDS, TERMINAL, OpenItem, StreamState, start

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
FINISH_HOOKS = web.RequestKey("finish_hooks", list)  # hooks the create route adds to its Generation
MAX_KEY_CHARS = 255
STALE_MARGIN_S = 60
PATH = "/v1/responses"


def fingerprint(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read(raw: bytes) -> tuple[dict | None, str]:
    """(the body if it is a JSON object, its fingerprint)."""
    try:
        body = parse_json_object(raw)  # the route parses again and answers the 400 itself
    except ApiError:
        return None, ""
    return body, fingerprint(body)


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise ApiError("invalid_request", f"Invalid '{HEADER}' header: expected 1 to {MAX_KEY_CHARS} printable "
                       "ASCII characters.", param=HEADER)


class Claim:
    """A key this request holds; ``finished`` is its Generation's finish hook."""

    def __init__(self, gw: Gateway, tenant: str, key: str) -> None:
        self.gw, self.tenant, self.key, self.fired = gw, tenant, key, False

    async def finished(self, resp: dict) -> None:
        self.fired = True
        if resp["status"] == "cancelled":
            await self.release()
        else:
            with self.gw.metrics.store_op("idempotency_finish"):
                await self.gw.store.finish_idempotency_key(self.tenant, self.key, resp)

    async def release(self) -> None:
        with self.gw.metrics.store_op("idempotency_release"):
            await self.gw.store.release_idempotency_key(self.tenant, self.key)


def _item_events(st: StreamState, index: int, item: dict) -> list[dict]:
    kind = KINDS.get(item.get("type") or "")
    if kind is None:  # an item kind without deltas: announced, then done
        return [{"type": "response.output_item.added", "output_index": index, "item": item},
                {"type": "response.output_item.done", "output_index": index, "item": item}]
    content = item.get("content") or [{}]
    text = kind.text_of(item)
    it = OpenItem(kind=kind, index=index, item_id=item["id"], pieces=[text], call_id=item.get("call_id", ""),
                  name=item.get("name", ""), logprobs=list(content[0].get("logprobs") or []))
    events = kind.added(st, it)
    if text:
        events.append(kind.delta(st, it, text, None))
    events += kind.done(st, it, item.get("status", "completed"))[1]
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def replay_events(resp: dict, dialect: str) -> list[dict]:
    """A whole event stream (no sequence numbers yet) for a finished response."""
    snapshot = dict(resp, status="in_progress", output=[], usage=None, completed_at=None,
                    incomplete_details=None, error=None)
    st = StreamState(snapshot, dialect=dialect)
    events = start(st)
    for index, item in enumerate(resp["output"]):
        events += _item_events(st, index, item)
    events.append({"type": TERMINAL[resp["status"]], "response": resp})
    return events


async def _replay(request: web.Request, gw: Gateway, resp: dict, stream: bool) -> web.StreamResponse:
    if not stream:
        return web.Response(text=dumps(resp), content_type="application/json", headers={REPLAYED_HEADER: "true"})
    if resp["status"] not in TERMINAL:  # a background create, recorded as queued: follow its event log
        from . import events  # lazily: only background responses have a log to follow
        return await events.follow(gw, request, resp["id"], request[TENANT], -1)
    writer = SSEWriter(request, gw.settings.ping_interval_s, defer_headers=True)
    writer.response.headers[REPLAYED_HEADER] = "true"
    await writer.open()
    await writer.send_all(replay_events(resp, gw.settings.reasoning_dialect))
    await writer.close()
    return writer.response


async def _answer_existing(request: web.Request, gw: Gateway, record, digest: str, body: dict):
    if record.body_hash != digest:
        raise ApiError("conflict", f"This {HEADER} was already used with a different request body.",
                       param=HEADER, code="idempotency_key_reused")
    if record.state != "done":
        raise ApiError("conflict", f"A request with this {HEADER} is still in progress; retry when it has "
                       "finished.", param=HEADER, code="idempotency_request_in_progress",
                       headers={"Retry-After": "1"})
    return await _replay(request, gw, record.response, body.get("stream") is True)


@web.middleware
async def middleware(request: web.Request, handler) -> web.StreamResponse:
    """Runs inside auth (the tenant is known); errors propagate to errors.py's middleware."""
    key = request.headers.get(HEADER)
    if key is None or request.method != "POST" or request.path != PATH:
        return await handler(request)
    check_key(key)
    body, digest = await asyncio.to_thread(_read, await request.read())  # bodies may be large
    if body is None:
        return await handler(request)  # the handler answers the 400; nothing to remember
    gw, tenant, now = request.app[GATEWAY], request[TENANT], int(time.time())
    with gw.metrics.store_op("idempotency_claim"):
        record = await gw.store.claim_idempotency_key(
            tenant, key, digest, now, now - int(gw.settings.request_timeout_s + STALE_MARGIN_S))
    if record is not None:
        return await _answer_existing(request, gw, record, digest, body)
    claim = Claim(gw, tenant, key)
    request[FINISH_HOOKS] = [claim.finished]
    try:
        return await handler(request)
    except BaseException:
        if not claim.fired:  # failed before generating (or cancelled early): a retry runs again
            gw.spawn(claim.release())
        raise
