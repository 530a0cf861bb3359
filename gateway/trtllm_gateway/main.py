"""``trtllm-responses-gateway``: parse settings, serve the Responses API until SIGTERM/SIGINT.

``--workers`` 1 serves in this process. More (the default: the CPUs the cgroup allows) makes
this process a parent that binds the port, supervises that many worker processes and hands
each accepted connection to one of them (``supervisor.py``); a worker runs :func:`serve` on
the connections it is handed (``workers.py``).

Shutdown: the listening socket closes first (no new requests), open requests and streams
get up to ``--shutdown-timeout-s`` to finish, background saves complete, then the store and
the service channels close. Exit codes: 0 after a clean shutdown, 2 for bad settings or a
store that cannot be opened (in any worker, before the gateway served), 1 for anything else.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from trtllm_common import loop as event_loops
from trtllm_common.logs import setup_logging

from . import supervisor, workers
from .settings import GatewaySettings, parse_settings
from .store import StoreError

log = logging.getLogger("trtllm_gateway")


async def serve(settings: GatewaySettings, worker: workers.WorkerSlot | None = None) -> None:
    """Serves until SIGTERM/SIGINT: on ``settings.host:port``, or, in a worker, the connections
    its parent hands it."""
    from .app import build_app  # here, not at import: a supervising parent never loads the app
    from .http_server import GatewayServer, make_runner

    app = build_app(settings)
    if worker is not None:
        app.on_response_prepare.append(worker.header)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if worker is not None:
            if isinstance(runner.server, GatewayServer):
                runner.server.on_close = worker.closed
            await workers.HandedSite(runner, worker, stop.set).start()
        else:
            await web.TCPSite(runner, settings.host, settings.port, reuse_address=True).start()
            port = runner.addresses[0][1] if runner.addresses else settings.port
            print(f"trtllm-responses-gateway: listening on http://{settings.host}:{port}/v1 "
                  f"(service {', '.join(settings.service)})", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("shutting down", extra={"timeout_s": settings.shutdown_timeout_s})
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    worker = workers.inherited()
    # per-request access lines cost throughput; a worker's lines say which worker wrote them
    setup_logging(settings.log_level, settings.log_format, quiet=("aiohttp.access",),
                  fields={"worker": worker.index} if worker is not None else None)
    try:
        count = 1 if worker is not None else workers.worker_count(settings)
        if count > 1:
            return supervisor.supervise(settings, count, sys.argv[1:] if argv is None else argv)
        event_loops.run(serve(settings, worker), settings.event_loop)
    except (StoreError, OSError) as exc:
        log.error("cannot start the gateway: %s", exc)
        print(f"trtllm-responses-gateway: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
