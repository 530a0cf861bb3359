"""`bench_gateway.py --sim`: the gateway's own cost, measured against the simulator engine.

The service runs `--engine sim` (no model), so everything the machine spends beyond the
service is the gateway's and the client's. Two parts, each on its own service + gateway
subprocesses (sqlite store in a temporary directory); this module runs the first and holds
what both use:

1. CPU per event. The service streams as fast as it can (`--sim-tokens-per-s 0`, or
   `--cpu-rate`; no TTFT; `--answer-tokens` per answer). `--connections` clients send streaming (SSE) and
   non-streaming (JSON) creates with `store` off and on. The gateway's CPU time is
   utime+stime from /proc/<pid>/stat of the gateway and every process under it (workers),
   read before and after each row. An SSE event is one `event:`/`data:` block the client
   received; a JSON reply has no events, so its row is per output token. The service
   coalesces while a stream is behind, so there can be fewer events than tokens. Each row
   also gives throughput (responses/s, events/s, tokens/s), the CPU seconds of the service
   and of this client (`svc_s`, `cli_s`: on a small machine they share the cores with the
   gateway, and `busy` says how much of all cores the three used; `gw_busy`, how much of its
   own cores the gateway used), and which gateway worker served how many requests
   (`X-Gateway-Worker`). With several `--workers` values, one table each and then the
   throughput of each against the first count's.
   `--gateway-cpus` pins the gateway (and the workers it starts) to those CPUs and the service
   and this client to the others (bench_cpus.py), so worker scaling is measured on cores that nothing else
   uses: on a shared box the service and the client take the cores a second worker would
   need (docs/performance.md, "Where issue 13 stands").
2. Added latency: bench_latency.py (the same stack, its own service and gateway processes).
Timings are printed, never asserted. `wait_ready`, `free_port` and `pct` serve
bench_gateway.py too; the clients, `sim_stack` and `gateway_args` serve bench_latency.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from bench_cpus import MACHINE_CPUS, Pinning, on_cpus, pinning

from trtllm_common import loop as event_loops

TICKS = os.sysconf("SC_CLK_TCK")
PROMPT = "Tell me about the history of bread."
_OUTPUT_TOKENS = re.compile(rb'"output_tokens":\s*(\d+)')


# ------------------------------------------------------------------ processes and CPU time
def cpu_seconds(root: int) -> float:
    """utime+stime of `root` and its live descendants (gateway workers), in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0) for pid in tree) / TICKS


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 120, log: Path | None = None) -> None:
    """Until `url` answers 200 (and `log` says the gateway listens: every worker serves), or
    SystemExit when one of `procs` exits or `timeout` passes."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and (log is None or "listening on" in log.read_text(errors="replace")):
                    return
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready within {timeout}s")


@dataclass
class Stack:
    service: str
    gateway: str
    gateway_pid: int
    service_pid: int
    gateway_cpus: int  # how many CPUs the gateway may use


@contextlib.contextmanager
def sim_stack(sim_args: list[str], gateway_args: list[str], gateway_env: dict[str, str] | None = None,
              pin: Pinning | None = None) -> Iterator[Stack]:
    """A sim service and a gateway in front of it, as subprocesses on free ports; the gateway
    also gets ``gateway_env``. With ``pin``, the gateway runs on its CPUs, and the service and
    this process (the client) on the others while the stack is up."""
    bin_dir, tmp = Path(sys.executable).parent, tempfile.mkdtemp(prefix="bench-sim-")
    sport, gport = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with on_cpus(pin and pin.others):
        service = subprocess.Popen(
            [bin_dir / "trtllm-responses-service", "--engine", "sim", "--host", "127.0.0.1", "--port", str(sport),
             "--metrics-port", "-1", "--max-batch-size", "1024", "--max-queue", "4096", "--log-level", "WARNING",
             *sim_args], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/service.log", "wb"))
    with on_cpus(pin and pin.gateway):
        gateway = subprocess.Popen(
            [bin_dir / "trtllm-responses-gateway", "--port", str(gport), "--service", f"127.0.0.1:{sport}",
             "--store-url", f"sqlite:///{tmp}/bench.db", "--log-level", "WARNING", *gateway_args],
            env={**env, **(gateway_env or {})}, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/gateway.log", "wb"))
    try:
        wait_ready(f"http://127.0.0.1:{gport}/readyz", [service, gateway], log=Path(f"{tmp}/gateway.log"))
        with on_cpus(pin and pin.others):
            yield Stack(f"127.0.0.1:{sport}", f"http://127.0.0.1:{gport}", gateway.pid, service.pid,
                        len(pin.gateway if pin else MACHINE_CPUS))
    finally:
        for proc in (gateway, service):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


# ------------------------------------------------------------------ clients
@dataclass
class Tally:
    requests: int = 0
    tokens: int = 0
    events: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # gateway worker -> requests

    def count_worker(self, resp: aiohttp.ClientResponse) -> None:
        worker = resp.headers.get("X-Gateway-Worker", "-")
        self.served[worker] = self.served.get(worker, 0) + 1


def body(tokens: int, store: bool, stream: bool) -> dict:
    """A create whose answer is the simulator's `tokens` (room left: it ends `completed`)."""
    return {"model": "default", "input": PROMPT, "max_output_tokens": tokens + 16, "store": store,
            "stream": stream}


async def sse_request(session: aiohttp.ClientSession, payload: dict, out: Tally, timed: bool) -> None:
    """Counts events (blocks ending in a blank line) without parsing them; with `timed`,
    records TTFT and gaps between output_text.delta events."""
    start = last = time.perf_counter()
    carry, tail, first = b"", b"", True
    async with session.post("/v1/responses", json=payload) as resp:
        out.count_worker(resp)
        if resp.status != 200:
            out.errors += 1
            return
        async for chunk in resp.content.iter_any():
            data = carry + chunk
            out.events += data.count(b"\n\n")
            if timed and b"output_text.delta" in chunk:
                now = time.perf_counter()
                (out.ttft if first else out.gaps).append(now - (start if first else last))
                first, last = False, now
            carry, tail = data[-1:], (tail + chunk)[-65536:]
    found = _OUTPUT_TOKENS.findall(tail)
    if not (b"response.completed" in tail or b"response.incomplete" in tail) or not found:
        out.errors += 1
        return
    out.requests += 1
    out.tokens += int(found[-1])


async def json_request(session: aiohttp.ClientSession, payload: dict, out: Tally, timed: bool) -> None:
    async with session.post("/v1/responses", json=payload) as resp:
        out.count_worker(resp)
        reply = await resp.json(content_type=None)
    if resp.status != 200:
        out.errors += 1
        return
    out.requests += 1
    out.tokens += reply["usage"]["output_tokens"]


async def run_clients(concurrency: int, total: int, one, spread: float = 0) -> tuple[Tally, float]:
    """`concurrency` clients share `total` requests; with `spread`, client i starts i/concurrency
    of `spread` seconds late, so arrivals are even over one answer's time instead of a burst."""
    out, queue = Tally(), iter(range(total))

    async def client(i: int) -> None:
        await asyncio.sleep(spread * i / concurrency)
        for _ in queue:
            await one(out)
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return out, time.perf_counter() - started


def session(base_url: str, limit: int) -> aiohttp.ClientSession:
    key = os.environ.get("OPENAI_API_KEY", "unused")
    return aiohttp.ClientSession(base_url, headers={"Authorization": f"Bearer {key}"},
                                 connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=600))


# ------------------------------------------------------------------ the two parts
async def warm_up(http: aiohttp.ClientSession, connections: int) -> None:
    """Short streams on `connections` connections at once, so every gateway worker has served
    (model info cached, gRPC channel up) before anything is measured."""
    await asyncio.gather(*(sse_request(http, body(4, False, True), Tally(), False) for _ in range(connections)))


@dataclass
class Row:
    kind: str
    store: bool
    out: Tally
    spent: float  # gateway CPU seconds
    wall: float
    others: tuple[float, float]  # CPU seconds of the service and of this client
    gateway_cpus: int            # the CPUs the gateway may use (gw_busy is of these)

    def key(self) -> str:
        return f"{self.kind:5} {'on' if self.store else 'off':5}"

    def per_s(self) -> tuple[float, float]:
        """(responses/s, events/s; JSON: tokens/s)."""
        return self.out.requests / self.wall, (self.out.events if self.kind == "SSE" else self.out.tokens) / self.wall


CPU_HEADER = (f"{'path':5} {'store':5} {'reqs':>5} {'tokens':>8} {'events':>8} {'cpu_s':>7} {'us/event':>8} "
              f"{'events/cpu_s':>10} {'us/token':>8} {'resp/s':>7} {'events/s':>9} {'tok/s':>9} {'err':>4} "
              f"{'svc_s':>6} {'cli_s':>6} {'busy':>5} {'gw_busy':>7}  served by worker")


async def cpu_rows(stack: Stack, connections: int, requests: int, tokens: int) -> list[Row]:
    rows = []
    async with session(stack.gateway, connections) as http:
        await warm_up(http, connections)
        for kind, store in (("SSE", False), ("SSE", True), ("JSON", False), ("JSON", True)):
            fn = sse_request if kind == "SSE" else json_request
            payload = body(tokens, store, kind == "SSE")
            before = cpu_seconds(stack.gateway_pid), cpu_seconds(stack.service_pid), time.process_time()
            out, wall = await run_clients(connections, requests, lambda t, p=payload, f=fn: f(http, p, t, False))
            others = cpu_seconds(stack.service_pid) - before[1], time.process_time() - before[2]
            rows.append(Row(kind, store, out, cpu_seconds(stack.gateway_pid) - before[0], wall, others,
                            stack.gateway_cpus))
            print(cpu_row(rows[-1]), flush=True)
    return rows


def cpu_row(row: Row) -> str:
    out, spent = row.out, row.spent
    per = out.events if row.kind == "SSE" else out.tokens
    us = spent / per * 1e6 if per else float("nan")
    rate = per / spent if spent else float("nan")
    events = f"{out.events:8}" if row.kind == "SSE" else f"{'-':>8}"
    responses, events_s = row.per_s()
    served = " ".join(f"{w}:{n}" for w, n in sorted(out.served.items()))
    busy = (spent + sum(row.others)) / row.wall / len(MACHINE_CPUS)
    return (f"{row.key()} {out.requests:5} {out.tokens:8} {events} {spent:7.2f} "
            f"{us:8.1f} {rate:10.0f} {spent / out.tokens * 1e6 if out.tokens else float('nan'):8.1f} "
            f"{responses:7.2f} {events_s:9.0f} {out.tokens / row.wall:9.0f} {out.errors:4} "
            f"{row.others[0]:6.2f} {row.others[1]:6.2f} {busy:5.0%} {spent / row.wall / row.gateway_cpus:7.0%}  "
            f"{served}")



def scaling(tables: dict[int | None, list[Row]]) -> None:
    """Throughput of each worker count against the first's, row by row (same load)."""
    counts = list(tables)
    print(f"\n## Throughput by gateway workers (x: against {counts[0]} worker(s); JSON events are tokens)")
    print(f"{'path':5} {'store':5} " + " ".join(f"{f'{n}w resp/s':>10} {f'{n}w ev/s':>9} {'x':>5}" for n in counts))
    for i, first in enumerate(tables[counts[0]]):
        cells = []
        for n in counts:
            responses, events_s = tables[n][i].per_s()
            cells.append(f"{responses:10.2f} {events_s:9.0f} {responses / first.per_s()[0]:5.2f}")
        print(f"{first.key()} " + " ".join(cells))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(args) -> None:
    """The CPU part, per `args` (see bench_gateway.py's --sim options); the latency part is
    bench_latency.run."""
    pin = pinning(args.gateway_cpus)
    print(f"# gateway on the simulator engine  CPU: {cpu_model()}  cores: {len(MACHINE_CPUS)}  "
          f"load average at start: {os.getloadavg()[0]:.1f}  client loop: {args.client_loop}"
          + (f"  {pin.describe()}" if pin else ""))
    counts = args.workers or [None]
    tables = {}
    for workers in counts:
        rate = f"{args.cpu_rate:g} tokens/s per request" if args.cpu_rate else "tokens as fast as possible"
        print(f"\n## CPU per event: {args.connections} connections, {args.answer_tokens}-token answers, {rate}, "
              f"gateway workers: {workers or 'default'}")
        print(CPU_HEADER)
        with sim_stack(["--sim-tokens-per-s", str(args.cpu_rate), "--sim-ttft-ms", "0", "--sim-output-tokens",
                        str(args.answer_tokens), *args.service_arg], gateway_args(args, workers),
                       gateway_env(args), pin) as stack:
            tables[workers] = event_loops.run(cpu_rows(stack, args.connections, args.cpu_requests, args.answer_tokens),
                                              args.client_loop)
        print("(JSON rows: us/event and events/cpu_s are per output token)")
    if len(counts) > 1:
        scaling(tables)


def gateway_args(args, workers: int | None) -> list[str]:
    return [*args.gateway_arg, *(["--workers", str(workers)] if workers else [])]


def gateway_env(args) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.gateway_env)


def add_arguments(parser) -> None:
    group = parser.add_argument_group("--sim (gateway cost on the simulator engine)")
    group.add_argument("--sim", action="store_true", help="measure the gateway against --engine sim (own stack)")
    group.add_argument("--quick", action="store_true", help="skip latency levels above 64")
    group.add_argument("--client-loop", choices=event_loops.EVENT_LOOPS, default="uvloop",
                       help="the benchmark's own event loop (uvloop: a cheaper client, as wrk would be)")
    group.add_argument("--connections", type=int, default=8, help="clients of the CPU part")
    group.add_argument("--cpu-requests", type=int, default=16, help="requests per CPU row")
    group.add_argument("--answer-tokens", type=int, default=1000, help="tokens per answer in the CPU part")
    group.add_argument("--cpu-rate", type=float, default=0,
                       help="tokens/s per request in the CPU part (0: as fast as possible, so the service "
                       "coalesces; a rate the gateway keeps up with gives about one token per event)")
    group.add_argument("--latency-levels", type=int, nargs="+", default=[64, 512])
    group.add_argument("--latency-rate", type=float, default=50, help="tokens/s per request in the latency part")
    group.add_argument("--latency-tokens", type=int, default=64, help="tokens per answer in the latency part")
    group.add_argument("--latency-rounds", type=int, default=1, help="requests per client in the latency part")
    group.add_argument("--latency-repeats", type=int, default=1,
                       help="direct and gateway runs, alternating, per level; then the median of what was added")
    group.add_argument("--latency-client", choices=("raw", "aiohttp"), default="raw",
                       help="HTTP client of the gateway path: a bare kept-alive socket (bench_latency.py) or "
                       "aiohttp's, which adds about 2 ms of its own on a small machine")
    group.add_argument("--latency-spread", action="store_true",
                       help="stagger the clients' starts over one answer's time (steady arrivals, not one burst)")
    group.add_argument("--workers", type=int, nargs="+",
                       help="gateway --workers values: a CPU table and a latency table each, then each one's "
                       "throughput against the first's")
    group.add_argument("--gateway-cpus", metavar="LIST",
                       help="pin the gateway to these CPUs (e.g. 0-1) and the service and this client to the "
                       "others, so that worker scaling is measured on cores nothing else uses")
    group.add_argument("--gateway-arg", action="append", default=[], help="extra gateway flag (repeatable)")
    group.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                       help="environment variable for the gateway only (repeatable), e.g. "
                       "GRPC_EXPERIMENTS=-event_engine_client")
    group.add_argument("--service-arg", action="append", default=[],
                       help="extra service flag (repeatable), e.g. --service-arg=--stream-interval=4")
