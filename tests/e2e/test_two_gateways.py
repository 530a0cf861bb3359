"""Two gateway processes on one PostgreSQL store and one real service: background jobs are
shared, and survive the gateway that runs them being SIGKILLed.

The shipped console scripts run: ``trtllm-responses-service`` (the real default model) and
two ``trtllm-responses-gateway`` processes, A and B, on one fresh PostgreSQL database, with
a 2 s job lease. Observations are printed (run with ``-s`` to see them).
"""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import asyncpg
import openai
import pytest

from tests.e2e.test_stack import spawn_gateway
from tests.fixtures.gateway import check_stream, parse_sse
from tests.fixtures.service import spawn_service

pytestmark = pytest.mark.e2e

LEASE_S = 2.0
FLAGS = ("--job-lease-s", str(LEASE_S), "--event-poll-interval-s", "0.1", "--log-format", "text")
STORY = "Write a long story about a dragon who learns to bake bread."


async def _wait(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


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


async def test_two_gateways_share_background_jobs_and_survive_a_sigkill(tmp_path, fresh_postgres_dsn):
    dsn = fresh_postgres_dsn
    service = spawn_service(tmp_path)
    procs = {}
    try:
        for name in ("A", "B"):
            proc, root, _ = spawn_gateway(tmp_path, service.address, "--store-url", dsn, *FLAGS)
            procs[name] = (proc, root)
        a, b = (openai.AsyncOpenAI(base_url=procs[n][1] + "/v1", api_key="unused", max_retries=0, timeout=120)
                for n in ("A", "B"))
        replica_of = {procs[n][0].pid: n for n in procs}

        def who(row) -> str:
            return replica_of.get(int(row["claimed_by"].split(":")[1]), row["claimed_by"])

        # 1. created on A; read, streamed from the start, resumed and finished through B
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
        rest = await _sse(f"{procs['B'][1]}/v1/responses/{job.id}?stream=true"
                          f"&starting_after={head[-1]['sequence_number']}")
        done = check_stream(head + rest)
        assert done["status"] in ("completed", "incomplete") and done["output"]
        row = await _job_row(dsn, job.id)
        print(f"\n[two-gateways] job 1 {job.id}: created on A, ran on {who(row)}, streamed+resumed on B, "
              f"final status {done['status']}, {len(head + rest)} events")

        # 2. cancelled through B while it runs (on whichever replica claimed it)
        long_job = await a.responses.create(model="default", input=STORY, background=True, temperature=0,
                                            max_output_tokens=1000)
        assert await _wait(lambda: _has_output(dsn, long_job.id), 60)
        cancelled = await b.responses.cancel(long_job.id)
        assert cancelled.status == "cancelled"
        assert (await a.responses.retrieve(long_job.id)).status == "cancelled"
        row = await _job_row(dsn, long_job.id)
        print(f"[two-gateways] job 2 {long_job.id}: ran on {who(row)}, cancelled through B -> "
              f"{cancelled.status} after {sum(len(p.text) for i in cancelled.output for p in i.content)} chars")

        # 3. the replica running a job is SIGKILLed mid-generation: the other one ends it
        doomed = await a.responses.create(model="default", input=STORY, background=True, temperature=0,
                                          max_output_tokens=1000)
        assert await _wait(lambda: _has_output(dsn, doomed.id), 60)
        owner = who(await _job_row(dsn, doomed.id))
        survivor = "B" if owner == "A" else "A"
        procs[owner][0].send_signal(signal.SIGKILL)
        procs[owner][0].wait(10)
        killed_at = time.monotonic()
        client = b if survivor == "B" else a

        async def ended():
            resp = await client.responses.retrieve(doomed.id)
            return resp if resp.status not in ("queued", "in_progress") else None
        final = await _wait(ended, LEASE_S + 30)
        assert final is not None, "the job stayed in_progress after its gateway died"
        took = time.monotonic() - killed_at
        row = await _job_row(dsn, doomed.id)
        assert row["state"] == "done" and who(row) == survivor and row["attempts"] == 2
        assert final.status == "failed" and "stopped mid-generation" in final.error.message
        replayed = await _sse(f"{procs[survivor][1]}/v1/responses/{doomed.id}?stream=true")
        assert check_stream(replayed)["status"] == "failed"
        print(f"[two-gateways] job 3 {doomed.id}: ran on {owner}, {owner} SIGKILLed mid-generation; "
              f"{survivor} took it over after {took:.1f}s (lease {LEASE_S}s), final status {final.status}: "
              f"{final.error.message!r}; replay valid ({len(replayed)} events)")
        await a.close()
        await b.close()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        service.stop()
