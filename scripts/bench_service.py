#!/usr/bin/env python
"""Benchmark the inference service's Generate RPC over gRPC.

Starts `trtllm-responses-service` (CPU engine, default model) unless --address is given,
then, at each concurrency level, keeps that many streams in flight until --requests-per-level
requests have finished. Prints one table row per level: TTFT p50/p99, inter-token p50/p99,
aggregate output tokens/s, errors.

    .venv/bin/python scripts/bench_service.py                 # own service, levels 1 4 8
    .venv/bin/python scripts/bench_service.py --address 127.0.0.1:50051 --levels 1 8 --tokens 64
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

PROMPTS = ["Tell me about the history of bread.", "Explain how rainbows form.",
           "Write a short poem about autumn.", "What makes a good cup of tea?"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def one(stub, i: int, tokens: int, out: dict) -> None:
    chat = pb.Chat()
    chat.messages.add(role="user").content.add(text=PROMPTS[i % len(PROMPTS)])
    req = pb.GenerateRequest(chat=chat, sampling=pb.SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True))
    start = time.perf_counter()
    last = None
    try:
        async for msg in stub.Generate(req):
            now = time.perf_counter()
            if msg.HasField("delta") and msg.delta.text:
                if last is None:
                    out["ttft"].append(now - start)
                else:
                    out["itl"].append(now - last)
                last = now
            elif msg.HasField("final"):
                out["tokens"] += msg.final.usage.completion_tokens
    except grpc.aio.AioRpcError:
        out["errors"] += 1


async def level(stub, concurrency: int, total: int, tokens: int) -> dict:
    out = {"ttft": [], "itl": [], "tokens": 0, "errors": 0}
    queue = iter(range(total))

    async def worker():
        for i in queue:
            await one(stub, i, tokens, out)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out["elapsed"] = time.perf_counter() - start
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def row(concurrency: int, r: dict) -> str:
    return (f"| {concurrency:>4} | {ms(pct(r['ttft'], 50))} | {ms(pct(r['ttft'], 99))} | {ms(pct(r['itl'], 50))} | "
            f"{ms(pct(r['itl'], 99))} | {r['tokens'] / r['elapsed']:8.1f} | {r['errors']:>6} |")


async def run(address: str, levels: list[int], per_level: int, tokens: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        await level(stub, 1, 1, 8)  # warm-up
        print(f"\nGenerate over gRPC at {address}, {tokens} tokens per request, greedy")
        print("| conc | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | tok/s | errors |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for c in levels:
            r = await level(stub, c, max(per_level, c * 2), tokens)
            print(row(c, r), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="host:port of a running service; default starts one")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests-per-level", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("service_args", nargs="*", help="extra flags for the service it starts")
    args = parser.parse_args()
    proc = None
    address = args.address
    if address is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import tempfile

        from tests.fixtures.service import spawn_service
        proc = spawn_service(Path(tempfile.mkdtemp()), *args.service_args)
        address = proc.address
    try:
        asyncio.run(run(address, args.levels, args.requests_per_level, args.tokens))
    finally:
        if proc is not None:
            proc.stop()


if __name__ == "__main__":
    main()
