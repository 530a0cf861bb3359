"""Load figures for the TensorRT-LLM engine, read from TensorRT-LLM's iteration stats.

Protocol (TensorRT-LLM 1.2.x LLM API, `LLM.get_stats_async(timeout)`):
- The runtime queues one JSON dict per scheduler iteration; `get_stats_async` returns an
  async iterable over that one shared queue, and READING AN ENTRY REMOVES IT. So exactly
  one task (`poll_stats`) may read it; everything else reads the `StatsBoard` it fills.
- The iterable ends after `timeout` seconds without a new entry and then stays ended
  until the next request is submitted; before the first request it is empty. The poller
  therefore pauses between passes instead of spinning.
- Keys used: `numActiveRequests`, `numQueuedRequests`, `maxNumActiveRequests`, and
  `kvCacheStats.{usedNumBlocks, maxNumBlocks, cacheHitRate}` (cacheHitRate is cumulative).
- With the PyTorch backend the runtime produces no stats unless the LLM was built with
  `enable_iter_perf_stats=True` (the engine does that).
- Stats exist only for iterations that ran: an idle engine reports nothing, so the last
  figures would stay frozen at "1 running". When a pass yields nothing and the engine has
  no request in flight, the board resets running/queued/KV use to zero (the hit rate,
  a cumulative figure, is kept).

Upstream files read: tensorrt_llm/llmapi/llm.py (get_stats_async),
tensorrt_llm/executor/executor.py (aget_stats, empty_async_iterable),
tensorrt_llm/executor/result.py (IterationResult), tensorrt_llm/executor/proxy.py
(dispatch_stats_task), tensorrt_llm/llmapi/llm_args.py (enable_iter_perf_stats).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from .base import LoadInfo

log = logging.getLogger(__name__)


class StatsBoard:
    """The latest load figures; `snapshot()` is cheap enough for every metrics scrape."""

    def __init__(self, max_running: int) -> None:
        self._load = LoadInfo(max_running=max_running)
        self.updates = 0  # stats dicts applied so far

    def update(self, stat: dict[str, Any]) -> None:
        kv = stat.get("kvCacheStats") or {}
        used, total = kv.get("usedNumBlocks"), kv.get("maxNumBlocks")
        load = self._load
        load.running = int(stat.get("numActiveRequests", load.running))
        load.queued = int(stat.get("numQueuedRequests", load.queued))
        load.max_running = int(stat.get("maxNumActiveRequests") or load.max_running)
        if used is not None and total:
            load.kv_cache_utilization = min(1.0, float(used) / float(total))
        if kv.get("cacheHitRate") is not None:
            load.kv_cache_hit_rate = float(kv["cacheHitRate"])
        self.updates += 1

    def idle(self) -> None:
        self._load.running = 0
        self._load.queued = 0
        self._load.kv_cache_utilization = 0.0

    def snapshot(self) -> LoadInfo:
        load = self._load
        return LoadInfo(queued=load.queued, running=load.running,
                        kv_cache_utilization=load.kv_cache_utilization,
                        kv_cache_hit_rate=load.kv_cache_hit_rate, max_running=load.max_running)


async def poll_stats(llm: Any, board: StatsBoard, in_flight: Callable[[], int], stopping: asyncio.Event,
                     timeout_s: float = 2.0, pause_s: float = 0.5) -> None:
    """Read TensorRT-LLM's stats queue into `board` until `stopping` is set.

    Stop it by setting `stopping` (then cancelling): on Python 3.11 `asyncio.wait_for`, which
    the stats iterable awaits, can swallow a cancellation that races with a new entry."""
    while not stopping.is_set():
        got = 0
        try:
            async for stat in llm.get_stats_async(timeout_s):
                board.update(json.loads(stat) if isinstance(stat, (str, bytes)) else stat)
                got += 1
                if stopping.is_set():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad entry or a runtime hiccup must not end the poller
            log.warning("reading TensorRT-LLM iteration stats failed", exc_info=True)
        if not got and in_flight() == 0:
            board.idle()
        await asyncio.sleep(pause_s)
