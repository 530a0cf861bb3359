"""Graceful shutdown within one deadline: ``--shutdown-timeout-s`` in all.

Protocol (the gateway's shutdown contract, docs/gateway.md "Shutdown"): when aiohttp stops
the app (the listening socket is already closed, so no new requests arrive),
:func:`drain` starts one deadline of ``--shutdown-timeout-s``:

* Foreground generations (JSON, SSE, WebSocket) get until the deadline less a grace
  (:data:`GRACE_FRACTION` of it, at most :data:`MAX_GRACE_S`) to finish on their own.
  The rest are stopped (``driver.Stream.stop``): each ends as ``failed`` with
  ``driver.SHUTDOWN`` (a JSON reply that has nothing yet is a 503 to retry), through the
  driver's normal end, so its stored copy, its event log and its client all see the same
  terminal ``response.failed``.
* Background jobs get the same time to finish; the runner then abandons the rest to lease
  expiry, so another replica decides (``background.py``).
* Then clients following an event log (``?stream=true``) see their stream end (without a
  terminal event: they resume with ``starting_after`` elsewhere) within one poll interval,
  and WebSocket connections close with 1001 (going away).
* Cleanup (``app.py``) waits for detached saves only for what is left of the deadline
  (:func:`remaining`), then closes the service channels and the store.
"""
from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSCloseCode, web

from .context import GATEWAY, Gateway
from .events import LOGS

GRACE_FRACTION = 0.2  # of the timeout, kept for stopped streams to write their end
MAX_GRACE_S = 2.0
DEADLINE = web.AppKey("shutdown_deadline", float)


def remaining(app: web.Application) -> float:
    """Seconds left before the shutdown deadline (the whole timeout before shutdown starts)."""
    gw = app[GATEWAY]
    if DEADLINE not in app:
        return gw.settings.shutdown_timeout_s
    return max(0.0, app[DEADLINE] - asyncio.get_running_loop().time())


async def _end_streams(gw: Gateway, wait: float, grace: float) -> None:
    if gw.streams:
        await asyncio.wait(set(gw.streams.values()), timeout=wait)
    left = dict(gw.streams)
    for stream in left:
        stream.stop()
    if left:
        await asyncio.wait(set(left.values()), timeout=grace)


async def _close_sockets(gw: Gateway) -> None:
    for ws in list(gw.sockets):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the gateway is shutting down")


async def drain(app: web.Application, runner_stop) -> None:
    """``runner_stop(timeout)``: the background runner's stop."""
    gw, timeout = app[GATEWAY], app[GATEWAY].settings.shutdown_timeout_s
    app[DEADLINE] = asyncio.get_running_loop().time() + timeout
    grace = min(MAX_GRACE_S, timeout * GRACE_FRACTION)
    await asyncio.gather(_end_streams(gw, timeout - grace, grace), runner_stop(timeout - grace))
    app[LOGS].closing.set()  # followers of event logs end their streams within one poll
    await _close_sockets(gw)
