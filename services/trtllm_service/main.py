"""`trtllm-responses-service`: parse settings, build the engine, serve until SIGTERM/SIGINT.

Exit codes: 0 after a clean drain; 2 for bad settings or an engine that cannot be built
here (e.g. `--engine trtllm` without tensorrt_llm or a GPU); 1 for anything else.
The `__main__` guard matters: TensorRT-LLM's MPI workers re-import the entry module.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from trtllm_common import loop as event_loops
from trtllm_common.logs import setup_logging

from .engine import create_engine
from .engine.base import EngineUnavailable
from .server import InferenceServer
from .settings import ServiceSettings, parse_settings

log = logging.getLogger("trtllm_service")


async def serve(settings: ServiceSettings) -> None:
    engine = create_engine(settings)
    server = InferenceServer(settings, engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(server.start())
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if starting in done:
        failure = starting.exception()
        if failure is not None:
            waiter.cancel()
            await server.stop()
            raise failure
        print(f"trtllm-responses-service: serving {engine.model_id} on {server.address} "
              f"(metrics on :{server.metrics_port})", file=sys.stderr, flush=True)
        await waiter
        log.info("draining", extra={"grace_s": settings.grace_period_s})
        await server.drain()
    else:
        starting.cancel()
        await server.stop()
    await engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    setup_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        event_loops.run(serve(settings), settings.event_loop)
    except (EngineUnavailable, ImportError, FileNotFoundError, ValueError) as exc:
        log.error("cannot start the engine: %s", exc)
        print(f"trtllm-responses-service: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
