"""Two gateway processes on one PostgreSQL store and one real service: background jobs are
shared, and survive the gateway that runs them being SIGKILLed.

The shipped console scripts run: ``trtllm-responses-service`` (the real default model) and
two ``trtllm-responses-gateway`` processes, A and B, on one fresh PostgreSQL database, with
a 2 s job lease. Observations are printed (run with ``-s`` to see them).
"""
from __future__ import annotations

import signal
import time

import aiohttp
import asyncpg
import openai
import pytest

from tests.e2e.test_stack import spawn_gateway
from tests.fixtures.gateway import check_stream, parse_sse
from tests.fixtures.service import spawn_service
from tests.fixtures.waiting import until

pytestmark = pytest.mark.e2e

LEASE_S = 2.0
FLAGS = ("--job-lease-s", str(LEASE_S), "--event-poll-interval-s", "0.1", "--log-format", "text",
         "--workers", "1")  # one process each: a job's claimed_by names the process SIGKILLed below
STORY = "Write a long story about a dragon who learns to bake bread."


async def _wait(predicate, timeout: float, interval: float = 0.1):
    return await until(predicate, timeout, interval)


async def _job_row(dsn: str, rid: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT claimed_by, attempts, state FROM background_jobs "
                                   "WHERE response_id = $1", rid)
    finally:
        await conn.close()


async def _sse(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 200, await r.text()
            return parse_sse(await r.text())


async def _has_output(dsn: str, rid: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM stream_events WHERE response_id = $1 "
                                        "AND type = 'response.output_text.delta'", rid))
    finally:
        await conn.close()


class Replicas:
    """The two gateway processes, their SDK clients, and which process claimed a job."""

    def __init__(self, procs: dict, dsn: str) -> None:
        self.procs, self.dsn = procs, dsn
        self.clients = {n: openai.AsyncOpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=120)
                        for n, (_, root) in procs.items()}
        self._names = {proc.pid: n for n, (proc, _) in procs.items()}

    def root(self, name: str) -> str:
        return self.procs[name][1]

    async def owner(self, rid: str) -> tuple[str, dict]:
        row = await _job_row(self.dsn, rid)
        return self._names.get(int(row["claimed_by"].split(":")[1]), row["claimed_by"]), row


async def _created_on_a_resumed_on_b(r: Replicas) -> None:
    a, b = r.clients["A"], r.clients["B"]
    job = await a.responses.create(model="default", input="Say hello in one sentence.", background=True,
                                   temperature=0, max_output_tokens=48)
    assert job.status == "queued" and job.background
    assert (await b.responses.retrieve(job.id)).status in ("queued", "in_progress", "completed", "incomplete")
    head, stream = [], await b.responses.retrieve(job.id, stream=True)
    async for event in stream:
        head.append(event.to_dict())
        if event.type == "response.output_text.delta":
            break
    await stream.close()  # the reader goes away mid-stream, and resumes below
    rest = await _sse(f"{r.root('B')}/v1/responses/{job.id}?stream=true"
                      f"&starting_after={head[-1]['sequence_number']}")
    done = check_stream(head + rest)
    assert done["status"] in ("completed", "incomplete") and done["output"]
    print(f"\n[two-gateways] job 1 {job.id}: created on A, ran on {(await r.owner(job.id))[0]}, "
          f"streamed+resumed on B, final status {done['status']}, {len(head + rest)} events")


async def _cancelled_through_b(r: Replicas) -> None:
    a, b = r.clients["A"], r.clients["B"]
    job = await a.responses.create(model="default", input=STORY, background=True, temperature=0,
                                   max_output_tokens=1000)
    assert await _wait(lambda: _has_output(r.dsn, job.id), 60)
    cancelled = await b.responses.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert (await a.responses.retrieve(job.id)).status == "cancelled"
    chars = sum(len(p.text) for item in cancelled.output for p in item.content)
    print(f"[two-gateways] job 2 {job.id}: ran on {(await r.owner(job.id))[0]}, cancelled through B -> "
          f"{cancelled.status} after {chars} chars")


async def _owner_sigkilled(r: Replicas) -> None:
    job = await r.clients["A"].responses.create(model="default", input=STORY, background=True,
                                                temperature=0, max_output_tokens=1000)
    assert await _wait(lambda: _has_output(r.dsn, job.id), 60)
    owner, _ = await r.owner(job.id)
    survivor = "B" if owner == "A" else "A"
    r.procs[owner][0].send_signal(signal.SIGKILL)
    r.procs[owner][0].wait(10)
    killed_at = time.monotonic()

    async def ended():
        resp = await r.clients[survivor].responses.retrieve(job.id)
        return resp if resp.status not in ("queued", "in_progress") else None
    final = await _wait(ended, LEASE_S + 30)
    assert final is not None, "the job stayed in_progress after its gateway died"
    took = time.monotonic() - killed_at
    runner, row = await r.owner(job.id)
    assert row["state"] == "done" and runner == survivor and row["attempts"] == 2
    assert final.status == "failed" and "stopped mid-generation" in final.error.message
    replayed = await _sse(f"{r.root(survivor)}/v1/responses/{job.id}?stream=true")
    assert check_stream(replayed)["status"] == "failed"
    print(f"[two-gateways] job 3 {job.id}: ran on {owner}, {owner} SIGKILLed mid-generation; "
          f"{survivor} took it over after {took:.1f}s (lease {LEASE_S}s), final status {final.status}: "
          f"{final.error.message!r}; replay valid ({len(replayed)} events)")


async def test_two_gateways_share_background_jobs_and_survive_a_sigkill(tmp_path, fresh_postgres_dsn):
    service = spawn_service(tmp_path)
    procs = {}
    try:
        for name in ("A", "B"):
            proc, root, _ = spawn_gateway(tmp_path, service.address, "--store-url", fresh_postgres_dsn, *FLAGS)
            procs[name] = (proc, root)
        replicas = Replicas(procs, fresh_postgres_dsn)
        await _created_on_a_resumed_on_b(replicas)  # 1. created on A; read, streamed, resumed via B
        await _cancelled_through_b(replicas)        # 2. cancelled through B while it runs
        await _owner_sigkilled(replicas)            # 3. its replica SIGKILLed: the other ends it
        for client in replicas.clients.values():
            await client.close()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        service.stop()
