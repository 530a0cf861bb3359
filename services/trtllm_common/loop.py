"""The event loop a process runs on: uvloop (libuv) by default, or the standard library's.

Both tiers spend most of an event in the event loop (wake-ups, callbacks, socket writes);
uvloop does that work in C. Measured on the simulator at line rate (docs/performance.md,
"uvloop"): the service's CPU per request about 10 % lower, the gateway's 5 to 14 %. A
process whose platform has no uvloop wheel runs on asyncio's loop and logs why.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOPS = ("uvloop", "asyncio")

log = logging.getLogger("trtllm_common.loop")


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` makes its loop with (None: asyncio's default)."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {event_loop!r} (one of {', '.join(EVENT_LOOPS)})")
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:  # a platform without a wheel: slower, not broken
        log.warning("uvloop is not available (%s); running on asyncio's event loop", exc)
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on the chosen loop (logged: ``event_loop``, its module)."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        loop = runner.get_loop()
        name = type(loop).__module__.split(".")[0]
        log.info("event loop: %s", name, extra={"event_loop": name})
        return runner.run(main)
