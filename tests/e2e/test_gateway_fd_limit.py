"""The gateway at the open-file limit (issue 14, defect 12).

At the descriptor limit, asyncio (3.11) fails accept() hundreds of times a second and
reports each failure; the gateway used to log every one with a traceback (84,751 lines in
36 s) and stop answering. Here a child process runs the real gateway app through
``http_server.make_runner``, then opens files until none are left (as a leak elsewhere
would), while this test connects clients to it. Once the files are closed again the
gateway must answer ``/healthz``, and its log must hold at most a few accept-error lines.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # the gateway runs in a child process it can starve of descriptors

CHILD = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web
    from trtllm_common.logs import setup_logging
    from trtllm_gateway.app import build_app
    from trtllm_gateway.http_server import make_runner
    from trtllm_gateway.settings import GatewaySettings

    async def main(tmp, hold_s):
        settings = GatewaySettings(port=0, service=("127.0.0.1:9",), store_url=f"sqlite:///{tmp}/r.db",
                                   rpc_timeout_s=1, load_poll_interval_s=3600, log_format="text")
        setup_logging("INFO", "text")
        runner = make_runner(build_app(settings), settings)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print("PORT", runner.addresses[0][1], flush=True)
        await asyncio.sleep(0.5)
        hogs = []
        while True:
            try:
                hogs.append(open("/dev/null"))
            except OSError:
                break
        print("EXHAUSTED", flush=True)
        await asyncio.sleep(hold_s)
        for hog in hogs:
            hog.close()
        print("RELEASED", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
""")

ROOT = Path(__file__).resolve().parents[2]
HOLD_S = 4.0


async def _line(proc: subprocess.Popen, prefix: str) -> str:
    while True:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, f"the child exited before printing {prefix}"
        if line.startswith(prefix):
            return line.strip()


async def _healthz(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return int(head.split()[1])


async def test_at_the_fd_limit_accept_errors_are_logged_rarely_and_service_resumes(tmp_path):
    log_path = tmp_path / "gateway.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "gateway"), str(ROOT / "services")])}
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(HOLD_S)], stdout=subprocess.PIPE,
                                stderr=log, text=True, env=env)
    clients: list[socket.socket] = []
    try:
        port = int((await _line(proc, "PORT")).split()[1])
        await _line(proc, "EXHAUSTED")
        for _ in range(20):  # the kernel completes these handshakes; the gateway cannot accept them
            clients.append(socket.create_connection(("127.0.0.1", port)))
        await _line(proc, "RELEASED")
        for sock in clients:
            sock.close()
        assert await _healthz(port) == 200
    finally:
        proc.kill()
        proc.wait()
    text = log_path.read_text()
    reports = text.count("out of system resource") + text.count("cannot accept connections")
    assert 1 <= reports <= 3, f"{reports} accept-error reports:\n{text[-3000:]}"
