#!/usr/bin/env python
"""CPU per store operation, as the gateway calls them (process CPU: the event loop and the
store's threads together).

Rows: ``save`` (a whole record), ``stored stream`` (what a stored SSE create writes:
``open_stream``, one batched ``append_events``, the fenced final ``write_job``), ``get``,
and ``history`` (the ``previous_response_id`` chain a create loads, ``--chain`` turns).
Each row runs ``--ops`` operations after a warm-up, one at a time. SQLite in a temporary
file by default; ``--store-url`` takes any URL the gateway takes (a PostgreSQL one too).

    .venv/bin/python scripts/bench_store.py
    .venv/bin/python scripts/bench_store.py --store-url postgresql://user:pw@host/db --ops 200
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import uuid
from collections.abc import Awaitable, Callable

from bench_gateway_sim import cpu_model  # lscpu's model name, as every bench prints it

from trtllm_gateway.store import LoggedEvent, ResponseStore, StoredResponse, open_store

TENANT = "bench"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def record(rid: str, status: str = "completed", prev: str | None = None) -> StoredResponse:
    """A short answer's record: two input messages, one output message."""
    inputs = [{"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "user",
               "content": [{"type": "input_text", "text": f"question {i} of {rid}"}]} for i in range(2)]
    output = [] if status != "completed" else [
        {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": f"the answer of {rid}", "annotations": [], "logprobs": None}]}]
    response = {"id": rid, "object": "response", "created_at": 1_700_000_000, "status": status, "error": None,
                "model": "default", "output": output, "previous_response_id": prev, "usage": None, "metadata": {}}
    return StoredResponse(id=rid, tenant=TENANT, created_at=1_700_000_000, status=status, response=response,
                          input_items=inputs, previous_response_id=prev)


def events(first: int, n: int) -> list[LoggedEvent]:
    return [LoggedEvent(i, "response.output_text.delta",
                        f'{{"type":"response.output_text.delta","sequence_number":{i},"delta":"word "}}')
            for i in range(first, first + n)]


def new_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


async def stored_stream(store: ResponseStore) -> None:
    rid = new_id()
    owner = await store.open_stream(record(rid, "in_progress"), "bench", 60_000, events(0, 4))
    await store.append_events([(owner, rid, events(4, 8))])
    await store.write_job(owner, rid, events=events(12, 4), record=record(rid), done=True)


async def measure(ops: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Milliseconds of process CPU per ``op``, after a warm-up of a tenth as many."""
    for i in range(max(1, ops // 10)):
        await op(i)
    start = cpu_s()
    for i in range(ops):
        await op(i)
    return (cpu_s() - start) / ops * 1000


async def run(args) -> None:
    store = open_store(args.store_url)
    await store.open()
    try:
        saved = [new_id() for _ in range(32)]
        for rid in saved:
            await store.save(record(rid))
        chain: list[str] = []
        for _ in range(args.chain):
            rid = new_id()
            await store.save(record(rid, prev=chain[-1] if chain else None))
            chain.append(rid)
        rows = {
            "save": lambda i: store.save(record(new_id())),
            "stored stream": lambda i: stored_stream(store),
            "get": lambda i: store.get(saved[i % len(saved)], TENANT),
            f"history ({args.chain} turns)": lambda i: store.history(chain[-1], TENANT),
        }
        print(f"# store CPU per operation  CPU: {cpu_model()}  cores: {len(os.sched_getaffinity(0))}  "
              f"store: {store.kind}  ops per row: {args.ops}")
        print(f"{'operation':22} {'ms CPU/op':>10}")
        for name, op in rows.items():
            print(f"{name:22} {await measure(args.ops, op):10.3f}")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-url", help="store URL (default: SQLite in a temporary directory)")
    parser.add_argument("--ops", type=int, default=400, help="operations per row")
    parser.add_argument("--chain", type=int, default=20, help="turns of the history row's chain")
    args = parser.parse_args()
    if args.store_url is None:
        args.store_url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-store-')}/store.db"
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
