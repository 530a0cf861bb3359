"""``--workers``: how many gateway processes, and a worker's side of its parent (``supervisor.py``).

Protocol between a worker and the supervising parent, over one Unix stream socket pair per
worker (the worker's end is passed as a descriptor named in :data:`WORKER_ENV`,
``"<slot index>:<fd>"``; the variable is consumed when read):

* worker -> parent: :data:`READY` once the app is set up and the worker takes connections;
  then :data:`CLOSED` each time a connection it was handed has closed (the parent counts
  each worker's open connections).
* parent -> worker: accepted connections, one descriptor per message (``SCM_RIGHTS``, with
  the one-byte payload :data:`HANDED`). End-of-file means the parent is gone: the worker shuts down as on
  SIGTERM.

A worker serves nothing but the connections it is handed (:class:`HandedSite`, an aiohttp
site, so the runner's cleanup stops it like a listening one). Each response names the slot
that served it in :data:`WORKER_HEADER`.

:func:`cpu_count` is the default count: the cgroup's CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``, the lowest along the cgroup's path) rounded
down, at least 1, at most the CPUs of the affinity mask.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .settings import GatewaySettings, in_memory_store

log = logging.getLogger("trtllm_gateway.workers")

WORKER_ENV = "_TRTLLM_GATEWAY_WORKER"
WORKER_HEADER = "X-Gateway-Worker"
READY, CLOSED, HANDED = b"R", b"-", b"C"
MAX_FDS = 64  # descriptors taken per read of the control socket


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
class WorkerSlot:
    """What a worker was handed by its parent: its slot index and the control socket."""

    def __init__(self, index: int, control: socket.socket) -> None:
        self.index = index
        self.control = control

    def closed(self) -> None:
        """A handed connection closed: the parent's count of this worker's connections drops."""
        with contextlib.suppress(OSError):  # a full buffer or a gone parent: nothing to tell
            self.control.send(CLOSED)

    async def header(self, _request: web.BaseRequest, response: web.StreamResponse) -> None:
        """``on_response_prepare`` hook: which worker served (requests on one connection share it)."""
        response.headers[WORKER_HEADER] = str(self.index)


def inherited() -> WorkerSlot | None:
    """This process's slot when a supervising parent started it (the variable is consumed)."""
    raw = os.environ.pop(WORKER_ENV, None)
    if not raw:
        return None
    index, fd = raw.split(":")
    control = socket.socket(fileno=int(fd))
    control.setblocking(False)
    return WorkerSlot(int(index), control)


class HandedSite(web.BaseSite):
    """Serves the connections the parent accepted and handed over the control socket."""

    def __init__(self, runner: web.BaseRunner, slot: WorkerSlot, on_parent_gone: Callable[[], None]) -> None:
        super().__init__(runner)
        self.slot, self.on_parent_gone = slot, on_parent_gone
        self.starting: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return f"connections handed to worker {self.slot.index}"

    async def start(self) -> None:
        await super().start()
        asyncio.get_running_loop().add_reader(self.slot.control.fileno(), self._readable)
        self.slot.control.send(READY)

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.slot.control.fileno())
        await super().stop()

    def _readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.slot.control, MAX_FDS, MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:
            asyncio.get_running_loop().remove_reader(self.slot.control.fileno())
            log.warning("the supervising gateway process is gone: shutting down")
            self.on_parent_gone()
            return
        for fd in fds:
            task = asyncio.create_task(self._serve(socket.socket(fileno=fd)))
            self.starting.add(task)
            task.add_done_callback(self.starting.discard)

    async def _serve(self, sock: socket.socket) -> None:
        server = self._runner.server
        try:
            if server is None:
                raise ConnectionAbortedError("the runner is cleaned up")
            await asyncio.get_running_loop().connect_accepted_socket(server, sock)
        except OSError as exc:  # gone before it was served
            log.debug("handed connection lost before serving: %r", exc)
            sock.close()
            self.slot.closed()
