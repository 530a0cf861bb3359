#!/usr/bin/env python
"""Benchmark the gateway against the service it fronts, in one run, with the same load.

For each concurrency level (default 1, 8, 64) it streams the same requests twice:
through the gateway with the openai SDK (``responses.create(stream=True)``), and straight to
the service's gRPC ``Generate`` with the very GenerateRequest the gateway would send (built
by the gateway's own translation code, greedy, same max tokens). It prints TTFT p50/p99,
inter-token p99, output tokens/s and errors for both, and the gateway's added latency.

Starts its own service (CPU engine, default model) and gateway as subprocesses unless
``--service``/``--gateway`` are given.

``--sim`` measures the gateway itself instead (bench_gateway_sim.py): against the simulator
engine, its CPU time per event for SSE and JSON with store off and on, and the TTFT and
inter-event latency it adds over direct gRPC at concurrency 64 and 512 (``--quick``: 64 only).

    .venv/bin/python scripts/bench_gateway.py
    .venv/bin/python scripts/bench_gateway.py --levels 1 8 --tokens 64 --requests 2
    .venv/bin/python scripts/bench_gateway.py --service 127.0.0.1:50051 --gateway http://127.0.0.1:8080
    .venv/bin/python scripts/bench_gateway.py --sim [--quick] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The project's packages import after the path is set (E402).
import bench_gateway_sim  # noqa: E402
import bench_latency  # noqa: E402
from bench_gateway_sim import free_port, pct, wait_ready  # noqa: E402  (one copy, both scripts)

from trtllm_responses.inference.v1 import inference_pb2 as pb  # noqa: E402
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402

PROMPTS = ["Tell me about the history of bread.", "Explain how rainbows form.",
           "Write a short poem about autumn.", "What makes a good cup of tea?"]


def new_stats() -> dict:
    return {"ttft": [], "itl": [], "tokens": 0, "errors": 0}


def body(i: int, tokens: int) -> dict:
    return {"model": "default", "input": PROMPTS[i % len(PROMPTS)], "temperature": 0,
            "max_output_tokens": tokens, "store": False}


async def via_gateway(client: openai.AsyncOpenAI, i: int, tokens: int, out: dict) -> None:
    start, last = time.perf_counter(), None
    try:
        stream = await client.responses.create(stream=True, **body(i, tokens))
        async for event in stream:
            now = time.perf_counter()
            if event.type == "response.output_text.delta":
                out["ttft" if last is None else "itl"].append(now - (start if last is None else last))
                last = now
            elif event.type in ("response.completed", "response.incomplete"):
                out["tokens"] += event.response.usage.output_tokens
            elif event.type == "response.failed":
                out["errors"] += 1
    except openai.APIError:
        out["errors"] += 1


async def via_http(session, i: int, tokens: int, out: dict) -> None:
    """The same request with a minimal SSE reader (aiohttp): isolates the gateway's own cost
    from the openai SDK's per-event parsing, which shares the benchmark's CPU."""
    start, last = time.perf_counter(), None
    try:
        async with session.post("/v1/responses", json={**body(i, tokens), "stream": True}) as resp:
            if resp.status != 200:
                out["errors"] += 1
                return
            async for line in resp.content:
                now = time.perf_counter()
                if line.startswith(b"event: response.output_text.delta"):
                    out["ttft" if last is None else "itl"].append(now - (start if last is None else last))
                    last = now
                elif line.startswith(b"data: ") and b'"response.completed"' in line[:60] \
                        or line.startswith(b"data: ") and b'"response.incomplete"' in line[:60]:
                    out["tokens"] += json.loads(line[6:])["response"]["usage"]["output_tokens"]
                elif line.startswith(b"event: response.failed"):
                    out["errors"] += 1
    except aiohttp.ClientError:
        out["errors"] += 1


async def direct(stub, i: int, tokens: int, out: dict) -> None:
    from trtllm_gateway.request import parse_create  # the gateway's own translation (not needed by --sim)
    from trtllm_gateway.translate import chat_messages, generate_request

    req = parse_create(body(i, tokens))
    request = generate_request(req, pb.Chat(messages=chat_messages(None, req.input.items)), f"bench-{i}")
    start, last = time.perf_counter(), None
    try:
        async for msg in stub.Generate(request):
            now = time.perf_counter()
            if msg.HasField("delta") and msg.delta.text:
                out["ttft" if last is None else "itl"].append(now - (start if last is None else last))
                last = now
            elif msg.HasField("final"):
                out["tokens"] += msg.final.usage.completion_tokens
    except grpc.aio.AioRpcError:
        out["errors"] += 1


async def run_level(fn, target, concurrency: int, total: int, tokens: int) -> tuple[dict, float]:
    out, queue = new_stats(), iter(range(total))

    async def worker() -> None:
        for i in queue:
            await fn(target, i, tokens, out)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def row(name: str, concurrency: int, out: dict, wall: float) -> str:
    return (f"{name:8} {concurrency:5} {ms(pct(out['ttft'], 50))} {ms(pct(out['ttft'], 99))} "
            f"{ms(pct(out['itl'], 99))} {out['tokens'] / wall:9.1f} {out['errors']:6}")


async def bench(service: str, gateway: str, levels: list[int], per_client: int, tokens: int, kind: str) -> None:
    channel = grpc.aio.insecure_channel(service)
    stub = pb_grpc.InferenceServiceStub(channel)
    key = os.environ.get("OPENAI_API_KEY", "unused")
    if kind == "sdk":
        client = openai.AsyncOpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0, timeout=600)
        gateway_fn = via_gateway
    else:
        client = aiohttp.ClientSession(gateway, headers={"Authorization": f"Bearer {key}"},
                                       connector=aiohttp.TCPConnector(limit=0))
        gateway_fn = via_http
    await run_level(direct, stub, 1, 1, 16)  # warm-up of both paths
    await run_level(gateway_fn, client, 1, 1, 16)
    print(f"{'path':8} {'conc':>5} {'ttft_p50':>8} {'ttft_p99':>8} {'itl_p99':>8} {'tok/s':>9} {'errors':>6}  (ms)")
    for concurrency in levels:
        total = concurrency * per_client
        d_out, d_wall = await run_level(direct, stub, concurrency, total, tokens)
        g_out, g_wall = await run_level(gateway_fn, client, concurrency, total, tokens)
        print(row("direct", concurrency, d_out, d_wall))
        print(row("gateway", concurrency, g_out, g_wall))
        print(f"{'added':8} {concurrency:5} {(pct(g_out['ttft'], 50) - pct(d_out['ttft'], 50)) * 1000:8.1f} "
              f"{(pct(g_out['ttft'], 99) - pct(d_out['ttft'], 99)) * 1000:8.1f} "
              f"{(pct(g_out['itl'], 99) - pct(d_out['itl'], 99)) * 1000:8.1f}", flush=True)
    await client.close()
    await channel.close()


@contextlib.contextmanager
def own_stack(max_batch_size: int):
    """Service + gateway subprocesses on free ports; yields (service address, gateway URL)."""
    bin_dir, tmp = Path(sys.executable).parent, tempfile.mkdtemp(prefix="bench-gateway-")
    sport, gport = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    procs = [subprocess.Popen([bin_dir / "trtllm-responses-service", "--host", "127.0.0.1", "--port", str(sport),
                               "--metrics-port", "-1", "--max-batch-size", str(max_batch_size)],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/service.log", "wb"))]
    procs.append(subprocess.Popen([bin_dir / "trtllm-responses-gateway", "--port", str(gport),
                                   "--service", f"127.0.0.1:{sport}", "--store-url", f"sqlite:///{tmp}/bench.db"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/gateway.log", "wb")))
    try:
        wait_ready(f"http://127.0.0.1:{gport}/readyz", procs, 300, log=Path(f"{tmp}/gateway.log"))
        yield f"127.0.0.1:{sport}", f"http://127.0.0.1:{gport}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", help="service gRPC address (default: start one)")
    parser.add_argument("--gateway", help="gateway root URL, e.g. http://127.0.0.1:8080 (default: start one)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=2, help="requests per concurrent client")
    parser.add_argument("--tokens", type=int, default=32, help="max output tokens per request")
    parser.add_argument("--client", choices=("sdk", "http"), default="sdk",
                        help="gateway client: the openai SDK, or a minimal aiohttp SSE reader")
    parser.add_argument("--max-batch-size", type=int, default=8, help="for the service this script starts")
    bench_gateway_sim.add_arguments(parser)
    args = parser.parse_args()
    if args.sim:
        bench_gateway_sim.run(args)
        bench_latency.run(args)
        return
    if bool(args.service) != bool(args.gateway):
        parser.error("give both --service and --gateway, or neither")
    if args.service:
        asyncio.run(bench(args.service, args.gateway, args.levels, args.requests, args.tokens, args.client))
        return
    with own_stack(args.max_batch_size) as (service, gateway):
        asyncio.run(bench(service, gateway, args.levels, args.requests, args.tokens, args.client))


if __name__ == "__main__":
    main()
