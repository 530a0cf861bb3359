"""The default of ``--workers``: the CPUs the cgroup allows, read from cgroup files laid out
as the kernel does (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), in a temporary directory; the
socket a supervising parent binds, and a worker's slot as it reads it."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from trtllm_gateway import supervisor, workers
from trtllm_gateway.settings import GatewaySettings, parse_settings

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{cgroup}\n")
    return root, proc


@pytest.mark.parametrize("files, cgroup, expected", [
    ({"cpu.max": "max 100000\n"}, "/", None),
    ({"cpu.max": "200000 100000\n"}, "/", 2.0),
    ({"cpu.max": "150000 100000\n"}, "/", 1.5),
    ({"kubepods/pod1/cpu.max": "400000 100000\n", "kubepods/cpu.max": "300000 100000\n"}, "/kubepods/pod1", 3.0),
    ({"cpu.max": "250000 100000\n"}, "/not/mounted/here", 2.5),  # a container sees its cgroup at the root
], ids=["unlimited", "two", "one-and-a-half", "lowest-ancestor", "namespaced"])
def test_cgroup_v2_quota(tmp_path: Path, files: dict, cgroup: str, expected: float | None) -> None:
    root, proc = _v2(tmp_path, cgroup, files)
    assert workers.cgroup_cpus(root, proc) == expected


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    pod = root / "cpu,cpuacct" / "kubepods" / "pod1"
    pod.mkdir(parents=True)
    (pod / "cpu.cfs_quota_us").write_text("350000\n")
    (pod / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:memory:/kubepods/pod1\n4:cpu,cpuacct:/kubepods/pod1\n0::/\n")
    assert workers.cgroup_cpus(root, proc) == 3.5
    (pod / "cpu.cfs_quota_us").write_text("-1\n")
    assert workers.cgroup_cpus(root, proc) is None


def test_cpu_count_rounds_the_quota_down_within_the_affinity(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/", {"cpu.max": "50000 100000\n"})
    assert workers.cpu_count(root, proc) == 1  # half a CPU: still one worker
    (root / "cpu.max").write_text(f"{(AFFINITY + 8) * 100000} 100000\n")
    assert workers.cpu_count(root, proc) == AFFINITY
    (root / "cpu.max").write_text("max 100000\n")
    assert workers.cpu_count(root, proc) == AFFINITY
    assert workers.cpu_count(tmp_path / "absent", tmp_path / "absent-proc") == AFFINITY


def test_worker_count_defaults() -> None:
    assert workers.worker_count(GatewaySettings(workers=3)) == 3
    assert workers.worker_count(GatewaySettings(workers=0, store_url="sqlite://:memory:")) == 1
    assert workers.worker_count(GatewaySettings(workers=0)) == workers.cpu_count()


def test_settings_refuse_workers_over_a_private_store() -> None:
    assert parse_settings(["--workers", "4"]).workers == 4
    assert parse_settings([], env={"TRTLLM_GATEWAY_WORKERS": "2"}).workers == 2
    for argv in (["--workers", "-1"], ["--workers", "2", "--store-url", "sqlite://:memory:"]):
        with pytest.raises(SystemExit):
            parse_settings(argv)


def test_the_parent_binds_one_port_and_accepts_without_blocking() -> None:
    listeners = supervisor.bind("127.0.0.1", 0)
    try:
        assert len(listeners) == 1 and listeners[0].getsockname()[1] > 0
        with pytest.raises(BlockingIOError):
            listeners[0].accept()  # the parent's loop takes connections when the socket is readable
        with socket.create_connection(listeners[0].getsockname(), timeout=5):
            pass
    finally:
        for sock in listeners:
            sock.close()


def test_a_worker_reads_its_slot_once(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, mine = socket.socketpair()
    monkeypatch.setenv(workers.WORKER_ENV, f"2:{theirs.fileno()}")
    slot = workers.inherited()
    try:
        assert slot is not None and slot.index == 2 and slot.control.fileno() == theirs.fileno()
        assert workers.WORKER_ENV not in os.environ and workers.inherited() is None
        slot.closed()
        assert mine.recv(1) == workers.CLOSED  # what the parent counts
    finally:
        assert slot is not None
        slot.control.detach()  # the same descriptor as `theirs`
        for sock in (theirs, mine):
            sock.close()
