"""One gateway process with ``--workers 2`` over the simulator service: both workers serve,
their metrics merge, and what must be shared (idempotency keys, background responses, stored
responses behind WebSocket turns) is, whichever worker a request lands on.

The shipped console scripts run: ``trtllm-responses-service --engine sim`` (200 tokens/s per
request) and ``trtllm-responses-gateway --workers 2`` on a SQLite file. Each response names
its worker in ``X-Gateway-Worker``; a client reaches a chosen worker by opening connections
(the parent hands each to the worker with the fewest open ones) until one lands there, and
keeps it (one keep-alive connection per session). The last test stops the gateway with SIGTERM.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from openai.types.responses import Response
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_stack import spawn_gateway
from tests.fixtures.gateway import check_stream, parse_sse
from tests.fixtures.service import spawn_service
from tests.fixtures.waiting import until
from trtllm_gateway.workers import WORKER_HEADER

pytestmark = pytest.mark.e2e

SIM = ("--engine", "sim", "--sim-ttft-ms", "0", "--sim-tokens-per-s", "200", "--sim-output-tokens", "4000",
       "--log-format", "text")
FLAGS = ("--workers", "2", "--event-poll-interval-s", "0.1", "--log-format", "text")
WORKERS = ("0", "1")
TRIES = 64  # connections opened to reach one worker
CREATES = ("trtllm_gateway_http_requests_total", {"route": "/v1/responses", "method": "POST", "status": "200"})


@dataclass
class Gateway:
    proc: object
    root: str
    log_path: Path

    def pids(self) -> dict[str, int]:
        """The live pid of each worker slot, from the parent's log."""
        found = re.findall(r"worker (\d) started \(pid (\d+)\)", self.log_path.read_text())
        return {slot: int(pid) for slot, pid in found}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    service = spawn_service(tmp, *SIM)
    proc = None
    try:
        proc, root, log_path = spawn_gateway(tmp, service.address, *FLAGS)
        yield Gateway(proc, root, log_path)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the workers drain too; killed, the parent would leave them to notice
            proc.wait(60)
        service.stop()


def create(**fields) -> dict:
    return {"model": "default", "input": "Say something.", "max_output_tokens": 16, **fields}


def other(worker: str) -> str:
    return WORKERS[1 - WORKERS.index(worker)]


async def pinned(root: str, worker: str | None = None) -> tuple[aiohttp.ClientSession, str]:
    """A session whose one connection is served by ``worker`` (any when None)."""
    for _ in range(TRIES):
        session = aiohttp.ClientSession(root, connector=aiohttp.TCPConnector(limit=1))
        async with session.get("/healthz") as r:
            got = r.headers[WORKER_HEADER]
        if worker in (None, got):
            return session, got
        await session.close()
    raise AssertionError(f"no connection out of {TRIES} reached worker {worker}")


async def post(session: aiohttp.ClientSession, worker: str, path: str, body: dict, **kw) -> tuple[dict, dict]:
    async with session.post(path, json=body, **kw) as r:
        assert r.status == 200, await r.text()
        assert r.headers[WORKER_HEADER] == worker
        return await r.json(), dict(r.headers)


async def get(session: aiohttp.ClientSession, worker: str, path: str) -> dict:
    async with session.get(path) as r:
        assert r.status == 200 and r.headers[WORKER_HEADER] == worker, await r.text()
        return await r.json()


async def scrape(root: str, worker: str) -> dict[tuple[str, tuple], float]:
    """/metrics as served by ``worker``: {(sample name, sorted labels): value}."""
    session, _ = await pinned(root, worker)
    async with session:
        async with session.get("/metrics") as r:
            text = await r.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, labels: dict) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_both_workers_serve_and_metrics_are_merged(gateway: Gateway):
    assert await until(lambda: "listening on" in gateway.log_path.read_text(), 120, 0.2)
    assert gateway.log_path.read_text().count("event loop: uvloop") >= len(WORKERS)  # each worker's, by default
    before = value(await scrape(gateway.root, "0"), *CREATES)
    served: dict[str, int] = {}
    while set(served) != set(WORKERS):
        assert sum(served.values()) < TRIES, served
        async with aiohttp.ClientSession(gateway.root) as fresh:  # a new connection each time
            async with fresh.post("/v1/responses", json=create()) as r:
                assert r.status == 200
                Response.model_validate(await r.json())
                served[r.headers[WORKER_HEADER]] = served.get(r.headers[WORKER_HEADER], 0) + 1
    sent = sum(served.values())
    for worker in WORKERS:  # each worker serves the sum over both
        samples = await scrape(gateway.root, worker)
        assert value(samples, *CREATES) - before == sent, (worker, served)
        assert value(samples, "trtllm_gateway_active_streams", {}) == 0
        healthy = {k: v for k, v in samples.items() if k[0] == "trtllm_gateway_replica_healthy"}
        assert list(healthy.values()) == [1.0]  # one replica, one merged series
    print(f"\n[workers] {sent} creates served by workers {served}; /metrics of each counts {sent}")


async def test_an_idempotent_retry_on_the_other_worker_replays_the_response(gateway: Gateway):
    first, w = await pinned(gateway.root)
    second, _ = await pinned(gateway.root, other(w))
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with first, second:
        original, _ = await post(first, w, "/v1/responses", create(store=False), headers=key)
        replayed, headers = await post(second, other(w), "/v1/responses", create(store=False), headers=key)
    assert headers.get("Idempotent-Replayed") == "true" and replayed == original
    Response.model_validate(replayed)


async def test_a_background_response_of_one_worker_is_read_streamed_and_cancelled_on_the_other(gateway: Gateway):
    a, w = await pinned(gateway.root)
    b, _ = await pinned(gateway.root, other(w))
    c, _ = await pinned(gateway.root, other(w))
    async with a, b, c:
        job, _ = await post(a, w, "/v1/responses", create(background=True, max_output_tokens=3000))
        assert job["status"] == "queued"
        assert (await get(b, other(w), f"/v1/responses/{job['id']}"))["status"] in ("queued", "in_progress")
        async with b.get(f"/v1/responses/{job['id']}?stream=true") as follower:
            assert follower.status == 200 and follower.headers[WORKER_HEADER] == other(w)
            head = b""
            while b"response.output_text.delta" not in head:
                head += await follower.content.readany()
            cancelled, _ = await post(c, other(w), f"/v1/responses/{job['id']}/cancel", {})
            events = parse_sse((head + await follower.read()).decode())  # the follower ends too
        assert cancelled["status"] == "cancelled"
        assert [e["type"] for e in events][:3] == ["response.queued", "response.created", "response.in_progress"]
        assert events[-1]["type"] == "response.output_item.done" and events[-1]["item"]["status"] == "incomplete"
        stored = await get(a, w, f"/v1/responses/{job['id']}")
    assert stored["status"] == "cancelled" and Response.model_validate(stored)


class _Upgrades:
    """Headers of the WebSocket handshake replies (aiohttp keeps them private otherwise)."""

    def __init__(self) -> None:
        self.headers: list[dict] = []
        self.config = aiohttp.TraceConfig()
        self.config.on_request_end.append(self._end)

    async def _end(self, _session, _ctx, params) -> None:
        self.headers.append(dict(params.response.headers))


async def _ws_turn(ws, **fields) -> dict:
    await ws.send_json({"type": "response.create", **create(**fields)})
    events = []
    while not events or events[-1]["type"] not in ("response.completed", "response.incomplete", "response.failed"):
        msg = await asyncio.wait_for(ws.receive(), 60)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))
        assert events[-1]["type"] != "error", events[-1]
    return check_stream(events)


@pytest.mark.parametrize("worker", WORKERS)
async def test_websocket_turns_on_each_worker_continue_the_other_workers_responses(gateway: Gateway, worker: str):
    http, _ = await pinned(gateway.root, other(worker))
    async with http:
        first, _ = await post(http, other(worker), "/v1/responses", create(input="My name is Ada.", store=True))
    upgrades = _Upgrades()
    for _ in range(TRIES):
        async with aiohttp.ClientSession(trace_configs=[upgrades.config]) as session:
            async with session.ws_connect(gateway.root.replace("http", "ws", 1) + "/v1/responses") as ws:
                if upgrades.headers[-1][WORKER_HEADER] != worker:
                    continue
                second = await _ws_turn(ws, previous_response_id=first["id"], store=True)
                third = await _ws_turn(ws, previous_response_id=second["id"], store=False)
                break
    else:
        raise AssertionError(f"no WebSocket reached worker {worker}")
    assert second["previous_response_id"] == first["id"] and third["previous_response_id"] == second["id"]
    assert third["usage"]["input_tokens"] > second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


async def test_a_dead_worker_is_started_again_and_its_counts_stay(gateway: Gateway):
    before = value(await scrape(gateway.root, "0"), *CREATES)
    dead = gateway.pids()["1"]
    os.kill(dead, signal.SIGKILL)
    assert await until(lambda: gateway.pids()["1"] != dead, 60, 0.2), gateway.log_path.read_text()
    serves = f"worker 1 (pid {gateway.pids()['1']}) serves"
    assert await until(lambda: serves in gateway.log_path.read_text(), 120, 0.2)
    session, _ = await pinned(gateway.root, "1")  # the new worker serves on the same port
    await session.close()
    assert re.search(rf"worker 1 \(pid {dead}\) was killed by SIGKILL", gateway.log_path.read_text())
    for worker in WORKERS:
        assert value(await scrape(gateway.root, worker), *CREATES) == before


def test_workers_that_cannot_start_make_the_parent_exit_2(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the store's directory would have to be created under a file
    exe = str(Path(sys.executable).with_name("trtllm-responses-gateway"))
    done = subprocess.run([exe, "--port", "0", "--workers", "2", "--service", "127.0.0.1:9", "--log-format", "text",
                           "--store-url", f"sqlite:///{blocker}/store/r.db"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(r"worker \d exited with code 2 before it served: stopping", done.stderr), done.stderr[-3000:]
    assert "listening on" not in done.stderr


async def test_sigterm_drains_every_worker_and_the_parent_exits_0(gateway: Gateway):
    sessions = [await pinned(gateway.root, worker) for worker in WORKERS]
    streams = []
    for session, _ in sessions:
        streams.append(await session.post("/v1/responses", json=create(stream=True, max_output_tokens=300)))
    heads = []
    for stream in streams:
        heads.append(b"")
        while b"response.output_text.delta" not in heads[-1]:
            heads[-1] += await stream.content.readany()
    pids = gateway.pids()
    gateway.proc.send_signal(signal.SIGTERM)
    for head, stream, (session, _) in zip(heads, streams, sessions, strict=True):
        events = parse_sse((head + await stream.read()).decode())  # it finishes during the drain
        assert check_stream(events)["status"] == "incomplete"  # 300 of the 4000 tokens: max_output_tokens
        stream.release()
        await session.close()
    assert await asyncio.to_thread(gateway.proc.wait, 60) == 0, gateway.log_path.read_text()[-3000:]
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = gateway.log_path.read_text()
    assert len(re.findall(r"worker \d \(pid \d+\) exited with code 0", text)) == 2
    assert {m for m in re.findall(r"\[worker (\d)\] shutting down", text)} == {"0", "1"}  # lines name their worker


RETIRED_SCRIPT = """
import asyncio, random, socket
from trtllm_gateway.discovery import parse_targets
from trtllm_gateway.metrics import GatewayMetrics
from trtllm_gateway.service_client import ReplicaPool
from trtllm_gateway.settings import GatewaySettings

records = {"inf": ["127.0.0.1", "127.0.0.2"]}

async def getaddrinfo(host, port, *, type=0):
    return [(socket.AF_INET, type, 6, "", (ip, port)) for ip in records[host]]

async def main():
    settings = GatewaySettings(service=("dns:///inf:9",), rpc_timeout_s=0.5)
    metrics = GatewayMetrics()
    pool = ReplicaPool(parse_targets(settings.service), settings, metrics, random.Random(0), getaddrinfo)
    await pool.refresh()
    before = metrics.exposition()[0].decode()
    records["inf"] = ["127.0.0.1"]
    await pool.refresh()
    after = metrics.exposition()[0].decode()
    await pool.close()
    for name, text in (("BEFORE", before), ("AFTER", after)):
        print(name, sorted(line for line in text.splitlines() if line.startswith("trtllm_gateway_replica_")))

asyncio.run(main())
"""


def test_a_replica_that_left_discovery_leaves_the_merged_gauges(tmp_path: Path):
    """Multiprocess files keep every series: a worker's /metrics leaves out the gauges of a
    replica it resolved away (the pool, its retirement and the real files, in a worker-like
    process of its own)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", RETIRED_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = (line for line in out.stdout.splitlines() if line.startswith(("BEFORE", "AFTER")))
    assert "127.0.0.2:9" in before and "127.0.0.1:9" in before
    assert "127.0.0.2:9" not in after
    assert 'trtllm_gateway_replica_healthy{replica="127.0.0.1:9"} 0.0' in after  # failed its probe: out of rotation
