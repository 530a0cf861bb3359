"""The parent of ``--workers N`` (N > 1): N gateway processes on one port.

Protocol:

* **Accepting.** The parent binds the port once (every address of ``--host``; with
  ``--port 0``, the port the first one got), accepts each connection itself and hands it to
  the worker with the fewest open connections (ties in turn), over that worker's control
  socket (``workers.py``). As Node.js's cluster module does by default, and for its reason:
  left to the kernel, connections spread unevenly. One shared listening socket let the first
  worker to wake take a whole burst (8 simultaneous connections all on one of two workers in
  2 of 5 tries); one SO_REUSEPORT socket per worker spreads them by a hash of their addresses
  (the bench's 8 connections landed 7 to 1). Handing costs the parent an accept and a
  ``sendmsg`` per connection, nothing per request. A worker that is not serving (starting,
  restarting) gets none; with none serving the parent stops accepting and the kernel queues.
* **Workers** are fresh interpreters (``python -m trtllm_gateway.main`` with the parent's
  arguments and environment), not forks: they inherit no threads, gRPC or store state, and
  prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported.
* **Start.** The parent waits until every worker serves, then prints the URL. A worker that
  exits first makes the parent stop the others and exit with its code (2: settings or
  store), or 1.
* **Running.** A worker that exits is logged and started again in its slot, after
  :data:`RESTART_DELAY_S`, doubled while restarts keep dying within :data:`STABLE_S`, at most
  :data:`MAX_RESTART_DELAY_S`. Its live gauges are dropped (``mark_process_dead``); its
  counters and histograms stay in the sums. Its open connections die with it.
* **Stop.** On SIGTERM or SIGINT the parent closes the listening sockets (new connections
  are refused) and forwards the signal to every worker, which drains within
  ``--shutdown-timeout-s`` (``shutdown.py``); one still running :data:`KILL_MARGIN_S` later is
  killed. The parent exits 0 when every worker exited 0, else 1.
* **Shared by the workers:** ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory,
  removed at exit; ``/metrics`` of any worker reads all of it), and, without
  ``--reasoning-key``, one random reasoning key drawn by the parent
  (``TRTLLM_GATEWAY_REASONING_KEY`` in the workers' environment), so reasoning sealed by one
  worker opens in the others. Everything else that must be shared lives in the store.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from .settings import GatewaySettings
from .workers import CLOSED, HANDED, READY, WORKER_ENV

log = logging.getLogger("trtllm_gateway.supervisor")

BACKLOG = 1024
ACCEPTS_PER_WAKEUP = 64
ACCEPT_PAUSE_S = 1.0  # after an accept error such as EMFILE, as asyncio does
RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 30.0
KILL_MARGIN_S = 10.0


def bind(host: str, port: int) -> list[socket.socket]:
    """A non-blocking listening socket per address of ``host``, all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    out: list[socket.socket] = []
    try:
        for family, sockaddr in dict.fromkeys((info[0], info[4]) for info in infos):
            sock = socket.socket(family, socket.SOCK_STREAM)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio does: "::" must not also take IPv4
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = sock.getsockname()[1]  # --port 0: the other addresses take the port the first got
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.control: socket.socket | None = None  # the parent's end, while the worker lives
        self.serving = False  # this run of the worker said READY and has not exited
        self.served = False   # ... said READY at all (kept after it exits)
        self.open = 0  # connections handed and not yet reported closed
        self.started = 0.0
        self.delay = RESTART_DELAY_S
        self.code: int | None = None


def _describe(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class Supervisor:
    """Starts the workers, hands them connections, restarts those that die, forwards stops."""

    def __init__(self, settings: GatewaySettings, argv: Sequence[str], listeners: list[socket.socket],
                 env: dict[str, str], count: int) -> None:
        self.settings, self.argv, self.env, self.listeners = settings, list(argv), env, listeners
        self.slots = [_Slot(i) for i in range(count)]
        self.turn = itertools.count()
        self.accepting = False
        self.accept_error_logged = float("-inf")
        self.failure: int | None = None  # exit code when the workers could not start
        self.stopping: signal.Signals | None = None
        self.stopped = asyncio.Event()
        self.all_ready = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        tasks = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
        stopped, ready = asyncio.create_task(self.stopped.wait()), asyncio.create_task(self.all_ready.wait())
        await asyncio.wait([stopped, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self.all_ready.is_set() and self.stopping is None:
            host, port = self.listeners[0].getsockname()[:2]
            print(f"trtllm-responses-gateway: listening on http://{self.settings.host or host}:{port}/v1 "
                  f"({len(self.slots)} workers; service {', '.join(self.settings.service)})",
                  file=sys.stderr, flush=True)
        await stopped
        _, late = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s + KILL_MARGIN_S)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                log.error("worker %d (pid %d) did not stop in time: killed", slot.index, slot.proc.pid)
                slot.proc.kill()
        await asyncio.gather(*late)
        if self.failure is not None:
            return self.failure
        return 0 if all(slot.code == 0 for slot in self.slots) else 1

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forwards ``sig`` to every worker; the first call also closes the port."""
        if self.stopping is None:
            self.stopping = sig
            log.info("stopping %d workers (%s)", len(self.slots), sig.name)
            self._accept(False)
            for sock in self.listeners:
                sock.close()
            self.stopped.set()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    # -------------------------------------------------------------- one slot's worker, again and again
    async def _keep(self, slot: _Slot) -> None:
        while self.stopping is None:
            await self._spawn(slot)
            assert slot.proc is not None
            slot.code = await slot.proc.wait()
            self._disconnect(slot)
            self._mark_dead(slot.proc.pid)
            if self.stopping is not None:
                log.info("worker %d (pid %d) %s", slot.index, slot.proc.pid, _describe(slot.code))
                return
            if not self.all_ready.is_set() and not slot.served:
                log.error("worker %d %s before it served: stopping", slot.index, _describe(slot.code))
                self.failure = slot.code if slot.code > 0 else 1
                self.stop()
                return
            await self._pause(slot)

    async def _spawn(self, slot: _Slot) -> None:
        mine, theirs = socket.socketpair()
        env = {**self.env, WORKER_ENV: f"{slot.index}:{theirs.fileno()}"}
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "trtllm_gateway.main", *self.argv, env=env,
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        slot.started, slot.control, slot.served = time.monotonic(), mine, False
        mine.setblocking(False)
        asyncio.get_running_loop().add_reader(mine.fileno(), self._from_worker, slot)
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)
        if self.stopping is not None:  # the stop came while it was being started
            slot.proc.send_signal(self.stopping)

    def _from_worker(self, slot: _Slot) -> None:
        assert slot.control is not None
        try:
            data = slot.control.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone; _keep learns it from its exit
            self._disconnect(slot)
            return
        if READY in data and not slot.serving:
            slot.serving = slot.served = True
            log.info("worker %d (pid %d) serves", slot.index, slot.proc.pid if slot.proc else -1)
            self._accept(self.stopping is None)
            if all(s.serving for s in self.slots):
                self.all_ready.set()
        slot.open = max(0, slot.open - data.count(CLOSED))

    def _disconnect(self, slot: _Slot) -> None:
        if slot.control is not None:
            asyncio.get_running_loop().remove_reader(slot.control.fileno())
            slot.control.close()
            slot.control = None
        slot.serving, slot.open = False, 0
        self._accept(self.stopping is None and any(s.serving for s in self.slots))

    async def _pause(self, slot: _Slot) -> None:
        assert slot.proc is not None and slot.code is not None
        lived = time.monotonic() - slot.started
        delay = RESTART_DELAY_S if lived >= STABLE_S else slot.delay
        slot.delay = min(delay * 2, MAX_RESTART_DELAY_S)  # for the next one, if this one dies soon too
        log.error("worker %d (pid %d) %s after %.1f s: starting it again in %.1f s", slot.index, slot.proc.pid,
                  _describe(slot.code), lived, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), delay)

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.env["PROMETHEUS_MULTIPROC_DIR"])

    # -------------------------------------------------------------- connections
    def _accept(self, on: bool) -> None:
        """Starts or stops taking connections off the listening sockets."""
        if on == self.accepting:
            return
        loop = asyncio.get_running_loop()
        for sock in self.listeners:
            if on:
                loop.add_reader(sock.fileno(), self._take, sock)
            else:
                loop.remove_reader(sock.fileno())
        self.accepting = on

    def _take(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE and friends: pause, as asyncio does
                self._accept_failed(exc)
                return
            with conn:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        """Passes ``conn`` to the serving worker with the fewest open connections."""
        turn = next(self.turn)
        ranked = sorted((s for s in self.slots if s.serving and s.control is not None),
                        key=lambda s: (s.open, (s.index - turn) % len(self.slots)))
        for slot in ranked:
            assert slot.control is not None
            try:
                socket.send_fds(slot.control, [HANDED], [conn.fileno()])
            except OSError:  # its buffer is full, or it just died: the next one
                continue
            slot.open += 1
            return
        log.warning("no worker could take a connection: closed")

    def _accept_failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self.accept_error_logged >= 10:
            log.error("cannot accept connections: %s; accepting pauses %.0f s after each", exc, ACCEPT_PAUSE_S)
            self.accept_error_logged = now
        self._accept(False)
        asyncio.get_running_loop().call_later(
            ACCEPT_PAUSE_S, lambda: self._accept(self.stopping is None and any(s.serving for s in self.slots)))


def _shared_env(settings: GatewaySettings, metrics_dir: str) -> dict[str, str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    if not settings.reasoning_key:
        kid = "workers-" + secrets.token_hex(4)
        env["TRTLLM_GATEWAY_REASONING_KEY"] = f"{kid}:{secrets.token_urlsafe(32)}"
        log.warning("no --reasoning-key set: reasoning encrypted_content uses a random key shared by this "
                    "gateway's workers (%s); it cannot be opened after a restart or by another replica", kid)
    return env


def supervise(settings: GatewaySettings, count: int, argv: Sequence[str]) -> int:
    """Runs ``count`` workers until SIGTERM/SIGINT; the exit code of the gateway."""
    listeners = bind(settings.host, settings.port)
    metrics_dir = tempfile.mkdtemp(prefix="trtllm-gateway-metrics-")
    try:
        env = _shared_env(settings, metrics_dir)
        return asyncio.run(Supervisor(settings, argv, listeners, env, count).run())
    finally:
        for sock in listeners:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
