"""The latency part of `bench_gateway.py --sim`: what the gateway adds to TTFT and to the gap
between tokens, against the same requests sent straight to the service's `Generate`.

The service paces tokens (`--latency-rate` per request, no TTFT). At each `--latency-levels`
concurrency the direct path and the gateway path (SSE, `store: false`) run one after the
other, `--latency-repeats` times, alternating, so a slow spell of a shared machine lands on
both; each repeat prints its rows and the last line gives the median of the repeats' added
values. `--latency-spread` staggers the clients' starts over one answer's time (steady
arrivals instead of one burst).

The gateway path's client (`--latency-client raw`, the default) is `RawConnections`: like
wrk, it writes a prebuilt request on a kept-alive connection and scans the reply's bytes.
aiohttp's client (`--latency-client aiohttp`) spends about 2 ms of its own per request on
a small machine (CLOCK_MONOTONIC stamps on both sides: 0.6 ms before the gateway sees the
request, 1.4 ms after the gateway wrote the first delta), which the direct gRPC path does
not pay. Timings are printed, never asserted.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import grpc
from bench_cpus import pinning
from bench_gateway_sim import (
    PROMPT,
    Stack,
    Tally,
    body,
    gateway_args,
    gateway_env,
    pct,
    run_clients,
    session,
    sim_stack,
    sse_request,
    warm_up,
)

from trtllm_common import loop as event_loops
from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

HEADER = (f"{'path':8} {'conc':>5} {'ttft_p50':>8} {'ttft_p99':>8} {'gap_p50':>8} {'gap_p99':>8} "
          f"{'errors':>6}  (ms)")
DELTA = b"output_text.delta"
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body
TERMINAL = (b"response.completed", b"response.incomplete")


class RawConnections:
    """Kept-alive connections to ``host:port``; ``sse()`` borrows one per request."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.idle: asyncio.Queue = asyncio.Queue()

    def request(self, payload: dict) -> bytes:
        data = json.dumps(payload).encode()
        return (f"POST /v1/responses HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.api_key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    async def _borrow(self):
        if self.idle.empty():
            return await asyncio.open_connection(self.host, self.port)
        return self.idle.get_nowait()

    async def sse(self, request: bytes, out: Tally) -> None:
        """One streamed create (``request`` from :meth:`request`): TTFT and the gaps between
        reads that carry an ``output_text.delta``, into ``out``."""
        reader, writer = await self._borrow()
        start = last = time.perf_counter()
        first, tail, head = True, b"", b""
        writer.write(request)
        while not tail.endswith(END):
            chunk = await reader.read(65536)
            if not chunk:
                out.errors += 1
                writer.close()
                return
            head = head or chunk[:12]
            out.events += chunk.count(b"\n\n")
            if DELTA in chunk:
                now = time.perf_counter()
                (out.ttft if first else out.gaps).append(now - (start if first else last))
                first, last = False, now
            tail = (tail + chunk)[-65536:]
        if head.startswith(b"HTTP/1.1 200") and any(t in tail for t in TERMINAL):
            out.requests += 1
        else:
            out.errors += 1
        self.idle.put_nowait((reader, writer))

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()


async def direct_request(stub, tokens: int, out: Tally) -> None:
    chat = pb.Chat()
    chat.messages.add(role="user").content.add(text=PROMPT)
    request = pb.GenerateRequest(chat=chat, sampling=pb.SamplingParams(max_tokens=tokens + 16))
    start = last = time.perf_counter()
    first = True
    try:
        async for msg in stub.Generate(request):
            if msg.HasField("delta") and msg.delta.text:
                now = time.perf_counter()
                (out.ttft if first else out.gaps).append(now - (start if first else last))
                first, last = False, now
                out.events += 1
            elif msg.HasField("final"):
                out.requests += 1
                out.tokens += msg.final.usage.completion_tokens
    except grpc.aio.AioRpcError:
        out.errors += 1


def ms(value: float) -> str:
    return f"{value * 1000:8.2f}"


def _figures(out: Tally) -> list[float]:
    return [pct(out.ttft, 50), pct(out.ttft, 99), pct(out.gaps, 50), pct(out.gaps, 99)]


async def _rows(stack: Stack, args, levels: list[int], spread: float) -> None:
    channel = grpc.aio.insecure_channel(stack.service)
    stub = pb_grpc.InferenceServiceStub(channel)
    host, port = stack.gateway.removeprefix("http://").split(":")
    raw = RawConnections(host, int(port), os.environ.get("OPENAI_API_KEY", "unused"))
    tokens = args.latency_tokens
    async with session(stack.gateway, max(levels)) as http:
        await direct_request(stub, 4, Tally())
        await warm_up(http, min(levels))
        request = raw.request(body(tokens, False, True))
        via_one = ((lambda t: raw.sse(request, t)) if args.latency_client == "raw"
                   else (lambda t: sse_request(http, body(tokens, False, True), t, True)))
        for level in levels:
            total, added = level * args.latency_rounds, []
            for _ in range(args.latency_repeats):
                direct, _ = await run_clients(level, total, lambda t: direct_request(stub, tokens, t), spread)
                via, _ = await run_clients(level, total, via_one, spread)
                for name, out in (("direct", direct), ("gateway", via)):
                    print(f"{name:8} {level:5} {' '.join(ms(v) for v in _figures(out))} {out.errors:6}")
                added.append([v - d for v, d in zip(_figures(via), _figures(direct), strict=True)])
                print(f"{'added':8} {level:5} {' '.join(ms(v) for v in added[-1])}", flush=True)
            if len(added) > 1:
                medians = [statistics.median(column) for column in zip(*added, strict=True)]
                print(f"{'median':8} {level:5} {' '.join(ms(v) for v in medians)}  (added, of {len(added)})")
    await channel.close()
    raw.close()


def run(args) -> None:
    """The latency tables, one per `--workers` value (see bench_gateway.py's --sim options)."""
    levels = [level for level in args.latency_levels if not (args.quick and level > 64)]
    spread = args.latency_tokens / args.latency_rate if args.latency_spread else 0
    arrivals = f"arrivals spread over {spread:.2f} s" if spread else "all clients start at once"
    for workers in args.workers or [None]:
        print(f"\n## Added latency: {args.latency_rate:g} tokens/s per request, {args.latency_tokens}-token answers, "
              f"{args.latency_rounds} per client, {arrivals}, SSE, store off, HTTP client: {args.latency_client}, "
              f"gateway workers: {workers or 'default'}")
        print(HEADER)
        with sim_stack(["--sim-tokens-per-s", str(args.latency_rate), "--sim-ttft-ms", "0", "--sim-output-tokens",
                        str(args.latency_tokens), *args.service_arg], gateway_args(args, workers),
                       gateway_env(args), pinning(args.gateway_cpus)) as stack:
            event_loops.run(_rows(stack, args, levels, spread), args.client_loop)
