"""``--workers N``: N gateway processes on one port, under a parent that only supervises them.

Protocol:

* **Sockets.** The parent binds before any worker runs: for each worker slot, one listening
  ``SO_REUSEPORT`` socket per address of ``--host``, all on one port (with ``--port 0``, the
  port the first one got). Worker *i* serves the sockets of slot *i*; the kernel spreads new
  connections over the slots by a hash of each connection's addresses. Not one shared
  socket: asyncio accepts greedily, so the first worker to wake takes a whole burst of
  connections (8 simultaneous connections all went to one of two workers in 2 of 5 tries;
  with a socket per slot, 4/4 to 1/7). The parent holds every socket while it supervises,
  so the port stays bound while a worker restarts, and connections queued on a dead
  worker's socket wait for its replacement instead of being reset.
* **Workers** are fresh interpreters (``python -m trtllm_gateway.main`` with the parent's
  arguments and environment), not forks: they inherit no threads, gRPC or store state, and
  prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported. A worker finds
  its slot in :data:`WORKER_ENV` (index, control socket, listening sockets). It writes one
  byte on the control socket once it serves; end-of-file there (the parent died) makes it
  shut down as on SIGTERM.
* **Start.** The parent waits until every worker serves, then prints the URL. A worker that
  exits first makes the parent stop the others and exit with its code (2: settings or
  store), or 1.
* **Running.** A worker that exits is logged and started again in its slot, after
  :data:`RESTART_DELAY_S`, doubled while restarts keep dying within :data:`STABLE_S`, at most
  :data:`MAX_RESTART_DELAY_S`. Its live gauges are dropped (``mark_process_dead``); its
  counters and histograms stay in the sums.
* **Stop.** SIGTERM and SIGINT are forwarded to every worker, and the parent closes its
  copies of the sockets (new connections are refused once the workers close theirs). Each
  worker drains within ``--shutdown-timeout-s`` (``shutdown.py``); one still running
  :data:`KILL_MARGIN_S` later is killed. The parent exits 0 when every worker exited 0.
* **Shared by the workers:** ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory,
  removed at exit; ``/metrics`` of any worker reads all of it), and, without
  ``--reasoning-key``, one random reasoning key drawn by the parent (``TRTLLM_GATEWAY_REASONING_KEY``
  in the workers' environment), so reasoning sealed by one worker opens in the others.
  Everything else that must be shared lives in the store.

:func:`cpu_count` is the default count: the cgroup's CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``, the lowest along the cgroup's path) rounded
down, at least 1, at most the CPUs of the affinity mask.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .settings import GatewaySettings, in_memory_store

log = logging.getLogger("trtllm_gateway.workers")

WORKER_ENV = "_TRTLLM_GATEWAY_WORKER"  # "index:control fd:listening fd,fd": set for workers only
WORKER_HEADER = "X-Gateway-Worker"     # the slot that served a response (worker mode only)
BACKLOG = 1024
RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 30.0
KILL_MARGIN_S = 10.0
READY = b"R"


# ------------------------------------------------------------------ how many
def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and not controllers:
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    return v2, v1


def _along(mount: Path, path: str | None) -> list[Path]:
    """The cgroup directory and its ancestors up to the mount (a container may see its own
    cgroup at the mount's root, whatever /proc/self/cgroup says)."""
    dirs, here = [mount], Path(path or "/")
    while here != here.parent:
        dirs.append(mount / here.relative_to("/"))
        here = here.parent
    return [d for d in dirs if d.is_dir()]


def _read_quota(directory: Path) -> float | None:
    """CPUs allowed by this directory's own limit (None: none or unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        if (directory / "cpu.max").is_file():
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (directory / "cpu.cfs_quota_us").is_file():
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            period_us = int((directory / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    return None


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (the lowest along its path), or None."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    dirs = _along(root / "unified", v2) + _along(root, v2) if v2 is not None else []
    if v1 is not None:
        for mount in (root / "cpu,cpuacct", root / "cpu"):
            dirs += _along(mount, v1)
    quotas = [q for q in map(_read_quota, dirs) if q is not None]
    return min(quotas) if quotas else None


def cpu_count(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpus(root, proc_cgroup)
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def worker_count(settings: GatewaySettings) -> int:
    """``--workers``, or its default (one process for an in-memory store)."""
    if settings.workers:
        return settings.workers
    return 1 if in_memory_store(settings.store_url) else cpu_count()


# ------------------------------------------------------------------ the worker's side
@dataclass
class WorkerSlot:
    """What a worker was handed by its parent."""

    index: int
    control: int
    sockets: list[socket.socket]

    def serving(self, on_parent_gone: Callable[[], None]) -> None:
        """Tells the parent this worker serves; ``on_parent_gone`` runs if the parent dies."""
        os.write(self.control, READY)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            with contextlib.suppress(OSError):
                if os.read(self.control, 64):
                    return
            loop.remove_reader(self.control)
            log.warning("the supervising gateway process is gone: shutting down")
            on_parent_gone()
        loop.add_reader(self.control, readable)

    async def header(self, _request, response) -> None:
        """``on_response_prepare`` hook: which worker served (requests on one connection share it)."""
        response.headers[WORKER_HEADER] = str(self.index)


def inherited() -> WorkerSlot | None:
    """This process's slot when a parent started it as a worker (the variable is consumed)."""
    raw = os.environ.pop(WORKER_ENV, None)
    if not raw:
        return None
    index, control, fds = raw.split(":")
    return WorkerSlot(int(index), int(control), [socket.socket(fileno=int(fd)) for fd in fds.split(",")])


# ------------------------------------------------------------------ the parent's side
def bind(host: str, port: int, slots: int) -> list[list[socket.socket]]:
    """For each slot, a listening SO_REUSEPORT socket per address of ``host``, all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    out: list[list[socket.socket]] = [[] for _ in range(slots)]
    try:
        for family, sockaddr in addresses:
            for group in out:
                sock = _listener(family, (sockaddr[0], port, *sockaddr[2:]))
                port = sock.getsockname()[1]  # --port 0: the rest join the port the first got
                group.append(sock)
    except OSError:
        for sock in (s for group in out for s in group):
            sock.close()
        raise
    return out


def _listener(family: int, sockaddr: tuple) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as asyncio does: "::" must not also take IPv4
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Slot:
    index: int
    sockets: list[socket.socket]
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY_S
    code: int | None = None


def _describe(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class Supervisor:
    """The parent: starts the workers, restarts those that die, forwards the stop signals."""

    def __init__(self, settings: GatewaySettings, argv: Sequence[str], slots: list[list[socket.socket]],
                 env: dict[str, str]) -> None:
        self.settings, self.argv, self.env = settings, list(argv), env
        self.slots = [_Slot(i, socks) for i, socks in enumerate(slots)]
        self.ready = 0
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
            self._announce()
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

    def _announce(self) -> None:
        host, port = self.slots[0].sockets[0].getsockname()[:2]
        print(f"trtllm-responses-gateway: listening on http://{self.settings.host or host}:{port}/v1 "
              f"({len(self.slots)} workers; service {', '.join(self.settings.service)})", file=sys.stderr, flush=True)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forwards ``sig`` to every worker; the first call also ends supervision."""
        if self.stopping is None:
            self.stopping = sig
            log.info("stopping %d workers (%s)", len(self.slots), sig.name)
            for sock in (s for slot in self.slots for s in slot.sockets):
                sock.close()
            self.stopped.set()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def _keep(self, slot: _Slot) -> None:
        """Runs the slot's worker until the gateway stops, starting it again when it dies."""
        while self.stopping is None:
            control = await self._spawn(slot)
            assert slot.proc is not None
            try:  # the parent's end stays open while the worker lives: its end-of-file means "parent gone"
                if await asyncio.get_running_loop().sock_recv(control, 1) == READY:
                    self._serving()
                slot.code = await slot.proc.wait()
            finally:
                control.close()
            self._mark_dead(slot.proc.pid)
            if self.stopping is not None:
                log.info("worker %d (pid %d) %s", slot.index, slot.proc.pid, _describe(slot.code))
                return
            if not self.all_ready.is_set():
                log.error("worker %d %s before it served: stopping", slot.index, _describe(slot.code))
                self.failure = slot.code if slot.code > 0 else 1
                self.stop()
                return
            await self._pause(slot)

    async def _pause(self, slot: _Slot) -> None:
        assert slot.proc is not None and slot.code is not None
        lived = time.monotonic() - slot.started
        delay = RESTART_DELAY_S if lived >= STABLE_S else slot.delay
        slot.delay = min(delay * 2, MAX_RESTART_DELAY_S)  # for the next one, if this one dies soon too
        log.error("worker %d (pid %d) %s after %.1f s: starting it again in %.1f s", slot.index, slot.proc.pid,
                  _describe(slot.code), lived, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), delay)

    async def _spawn(self, slot: _Slot) -> socket.socket:
        """Starts the slot's worker; returns the parent's end of its control socket."""
        mine, theirs = socket.socketpair()
        fds = [s.fileno() for s in slot.sockets]
        env = {**self.env, WORKER_ENV: f"{slot.index}:{theirs.fileno()}:{','.join(map(str, fds))}"}
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "trtllm_gateway.main", *self.argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *fds))
        finally:
            theirs.close()
        slot.started = time.monotonic()
        mine.setblocking(False)
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)
        if self.stopping is not None:  # the stop came while it was being started
            slot.proc.send_signal(self.stopping)
        return mine

    def _serving(self) -> None:
        self.ready += 1
        if self.ready == len(self.slots):
            self.all_ready.set()

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.env["PROMETHEUS_MULTIPROC_DIR"])


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
    slots = bind(settings.host, settings.port, count)
    metrics_dir = tempfile.mkdtemp(prefix="trtllm-gateway-metrics-")
    try:
        return asyncio.run(Supervisor(settings, argv, slots, _shared_env(settings, metrics_dir)).run())
    finally:
        for sock in (s for group in slots for s in group):
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
