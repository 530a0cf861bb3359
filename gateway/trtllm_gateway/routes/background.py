"""Background mode, cancel and resumable streams (OpenAI Responses API, docs/responses-api.md §1, §3).

* ``POST /v1/responses`` with ``background: true`` (needs ``store: true``, else 400):
  validated and prepared like any create by ``routes/responses.py`` (model, history,
  capabilities: errors are HTTP errors), then stored ``queued`` with its job and ``response.queued`` (sequence 0), and
  answered at once: the queued response object, or with ``stream: true`` the response's
  event stream from its start (``response.queued`` first). The job runs on whichever
  replica claims it (``background.py``); the client leaving does not stop it.
* ``GET /v1/responses/{id}?stream=true&starting_after=N``: the logged events after N, then
  the live ones, from any replica (``events.follow``). Works for background responses and
  for stored responses created with ``stream: true``.
* ``POST /v1/responses/{id}/cancel``: background responses only (else 400 "Only background
  responses can be cancelled."). Sets the job's cancel flag; the replica running it stops
  it within one poll interval; a job nobody runs (queued, or its replica's lease expired)
  is ended here. Answers the response once it is final (``cancelled``, or whatever it had
  already become); a finished response is returned unchanged. Idempotent.

Lifecycle (:func:`setup`): this replica's :class:`~..events.LogHub` and runner live on the
app; startup starts the runner (its watch loop also renews stored streams' leases), and
shutdown stops it first (``--shutdown-timeout-s``).
"""
from __future__ import annotations

import time

from aiohttp import web

from .. import driver, events, generation, shutdown
from ..background import BackgroundRunner, job_spec
from ..context import GATEWAY, TENANT
from ..errors import ApiError
from ..events import LOGS, LogHub
from ..request import CreateRequest
from ..sse import dumps
from ..store import FINAL_STATUSES

RUNNER = web.AppKey("background_runner", BackgroundRunner)
CANCEL_GRACE_S = 5.0  # beyond one lease: how long cancel waits for the response to end
CANCEL_RETRY_S = 1.0  # while waiting, the cancel request is repeated this often


def _json(body: dict) -> web.Response:
    return web.Response(text=dumps(body), content_type="application/json")


def _not_found(response_id: str) -> ApiError:
    return ApiError("not_found", f"Response with id '{response_id}' not found.", param="response_id")


async def create(request: web.Request, req: CreateRequest, g: generation.Generation, body: dict) -> web.StreamResponse:
    """A background create (already prepared): store it queued, with its job; answer at once."""
    gw, hub, tenant = request.app[GATEWAY], request.app[LOGS], request[TENANT]
    if not req.store:
        raise ApiError("invalid_request", "Background mode requires 'store': true (a background "
                       "response is stored so that it can be retrieved).", param="background")
    resp = dict(g.state.response, status="queued", background=True)
    record = generation.record(g, resp)
    first = events.logged({"type": "response.queued", "sequence_number": 0, "response": resp})
    with gw.metrics.store_op("enqueue_job"):
        await hub.store.enqueue_job(record, job_spec(body, g), [first])
    request.app[RUNNER].wake()
    await driver.finish_hooks(gw, g, resp)  # on what this request answers: the queued response
    if req.stream:
        return await events.follow(gw, request, resp["id"], tenant, -1)
    return _json(resp)


async def stream(request: web.Request, response_id: str) -> web.StreamResponse:
    """``GET /v1/responses/{id}?stream=true[&starting_after=N]``."""
    after = events.starting_after(request.query.get("starting_after"))
    return await events.follow(request.app[GATEWAY], request, response_id, request[TENANT], after)


async def cancel(request: web.Request) -> web.Response:
    gw, hub, runner = request.app[GATEWAY], request.app[LOGS], request.app[RUNNER]
    response_id, tenant = request.match_info["response_id"], request[TENANT]
    with gw.metrics.store_op("get"):
        record = await hub.store.get(response_id, tenant)
    if record is None:
        raise _not_found(response_id)
    if not record.response.get("background"):
        raise ApiError("invalid_request", "Only background responses can be cancelled.", param="response_id")
    deadline = time.monotonic() + gw.settings.job_lease_s + CANCEL_GRACE_S
    next_request = 0.0
    while record is not None and record.status not in FINAL_STATUSES and time.monotonic() < deadline:
        if time.monotonic() >= next_request:  # again later: a dead owner's lease may have expired
            await _request(hub, runner, response_id, tenant)
            next_request = time.monotonic() + CANCEL_RETRY_S
        await hub.wait(response_id, gw.settings.event_poll_interval_s)
        record = await hub.store.get(response_id, tenant)
    if record is None:
        raise _not_found(response_id)  # deleted meanwhile
    return _json(record.response)


async def _request(hub: LogHub, runner: BackgroundRunner, response_id: str, tenant: str) -> None:
    """Flag the job; end it here if nobody runs it; stop it at once if this replica does."""
    result = await hub.store.request_cancel(response_id, tenant, hub.replica, hub.lease_ms)
    if result.state == "claimed":
        assert result.job is not None, "a claimed cancel carries the job"
        runner.launch(result.job)
    elif result.state == "requested":
        reg = hub.owned.get(response_id)
        if reg is not None and reg.on_cancel is not None:
            reg.on_cancel()


async def _startup(app: web.Application) -> None:
    app[RUNNER].start()  # the store is open by now (the app's own startup runs first)


async def _shutdown(app: web.Application) -> None:
    await shutdown.drain(app, app[RUNNER].stop)  # one deadline for jobs and foreground streams


def setup(app: web.Application) -> None:
    """Routes and lifecycle; call after the app's own startup (store, service) is added."""
    gw = app[GATEWAY]
    hub = app[LOGS] = LogHub(gw.store, gw.settings)
    app[RUNNER] = BackgroundRunner(gw, hub)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
