"""Run a blocking function on a thread of its own that ends with it, awaited from the event loop.

Why not `asyncio.to_thread`: its pool threads live on. The CPU engine runs torch work (model
load, grammar compilation) this way because, measured here, once one live thread has run
OpenMP-parallel torch ops, matmuls on another thread run ~2.5x slower (see engine/cpu.py).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


async def run_in_fresh_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` on a new thread that ends with it, off the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=target, name="fresh-thread", daemon=True).start()
    return await future


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
