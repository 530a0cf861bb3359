"""Benchmark the CPU engine directly (no gRPC): waves of concurrent greedy requests.

For each concurrency level, starts that many identical-length requests at once (a chat
prompt, `--max-tokens` tokens each, `ignore_eos` so every request runs to length) and
reports TTFT p50/p99, inter-token latency p50/p99, aggregate tokens/s (all tokens of the
wave / wall time of the wave) and CPU time per token (the whole process; on a shared machine
it moves less than wall-clock figures, so it is the fairer A/B measure). `--repeat` waves per level; the first wave of the first level
is preceded by an unmeasured one.

    .venv/bin/python scripts/bench_engine.py                       # defaults: 1,4,8 x 64 tokens
    .venv/bin/python scripts/bench_engine.py --dtype float32 --attn paged|eager --blocks 32
    .venv/bin/python scripts/bench_engine.py --baseline            # plus plain `generate` baselines
    .venv/bin/python scripts/bench_engine.py --kernels torch       # without the native AMX kernel

`--baseline` first times HF `model.generate` on the same weights (single stream and a static
batch of the largest concurrency), the reference the engine is measured against. The machine is shared: run it when the cores are quiet and compare within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "services"))

from trtllm_service.engine.base import SamplingConfig  # noqa: E402
from trtllm_service.engine.cpu import ATTN_IMPLEMENTATION, MAX_BATCH_TOKENS, CpuEngine  # noqa: E402
from trtllm_service.settings import ServiceSettings  # noqa: E402

PROMPTS = ["Tell me a story about a cat.", "Explain how a bicycle works.", "Write a poem about the sea.",
           "What should I cook tonight?", "Describe the city of Paris.", "How do plants grow?",
           "Give me tips for learning to code.", "Why is the sky blue?"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_request(engine: CpuEngine, rid: str, prompt: list[int], max_tokens: int) -> tuple[float, list[float], int]:
    start = time.perf_counter()
    ttft, gaps, last, count = None, [], None, 0
    async for step in engine.generate(rid, prompt, SamplingConfig(max_tokens=max_tokens, ignore_eos=True)):
        now = time.perf_counter()
        n = len(step.token_ids)
        if n == 0:
            continue
        if ttft is None:
            ttft = now - start
        elif last is not None:
            gaps.extend([(now - last) / n] * n)
        last, count = now, count + n
    return ttft or float("nan"), gaps, count


async def wave(engine: CpuEngine, prompts: list[list[int]], concurrency: int, max_tokens: int, tag: str) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(one_request(engine, f"{tag}-{i}", prompts[i % len(prompts)], max_tokens)
                                     for i in range(concurrency)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ttfts = [r[0] for r in results]
    gaps = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    return {"ttft": ttfts, "itl": gaps, "tokens": tokens, "wall": wall, "cpu": cpu}


def chat_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        return_dict=False)
    return list(ids["input_ids"]) if not isinstance(ids, list) else list(ids)


def baseline(args: argparse.Namespace, batches: list[int]) -> dict[int, float]:
    """tokens/s of plain `model.generate` (static batch) on the same weights, on a thread that ends
    before the engine starts (a second live thread running torch would slow both)."""
    box: dict[int, float] = {}

    def run() -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from trtllm_service.model_source import resolve_model

        src = resolve_model(None)
        tok = AutoTokenizer.from_pretrained(src.model_dir, gguf_file=src.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(src.model_dir, gguf_file=src.gguf_file,
                                                     dtype=getattr(torch, args.dtype))
        prompt = chat_ids(tok, PROMPTS[0])
        for batch in batches:
            ids = torch.tensor([prompt] * batch)
            kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_tokens,
                          min_new_tokens=args.max_tokens, pad_token_id=tok.pad_token_id or 0)
            model.generate(ids, **kwargs)  # warm
            t = time.perf_counter()
            model.generate(ids, **kwargs)
            box[batch] = batch * args.max_tokens / (time.perf_counter() - t)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box


def _native_loaded(engine: CpuEngine) -> bool:
    return any(getattr(m, "native", None) is not None for m in engine.model.modules())


def print_table(rows: list[tuple]) -> None:
    head = ("conc", "wave", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "agg tok/s", "CPU ms/tok")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


async def main(args: argparse.Namespace) -> None:
    settings = ServiceSettings(dtype=args.dtype, cpu_threads=args.threads, cpu_cache_blocks=args.blocks,
                               cpu_block_size=args.block_size, max_batch_size=max(args.concurrency),
                               cpu_native_kernels=args.kernels == "native")
    if args.baseline:
        for batch, tps in baseline(args, sorted({1, max(args.concurrency)})).items():
            print(f"# plain generate, static batch {batch}: {tps:.1f} tok/s", flush=True)
    engine = CpuEngine(settings, attn_implementation=args.attn, max_batch_tokens=args.max_batch_tokens,
                       int4_decode=args.kernels != "dense")
    t = time.perf_counter()
    await engine.start()
    print(f"# start {time.perf_counter() - t:.1f}s; dtype={args.dtype} attn={args.attn} blocks={args.blocks}x"
          f"{args.block_size} max_batch_tokens={args.max_batch_tokens} threads={args.threads or 'all'} "
          f"max_tokens={args.max_tokens} kernels={args.kernels} (native loaded: {_native_loaded(engine)})", flush=True)
    prompts = [chat_ids(engine.tokenizer, p) for p in PROMPTS]
    await wave(engine, prompts, max(args.concurrency), 8, "warm")
    rows = []
    for conc in args.concurrency:
        for rep in range(args.repeat):
            r = await wave(engine, prompts, conc, args.max_tokens, f"c{conc}r{rep}")
            rows.append((conc, rep, f"{pct(r['ttft'], .5) * 1e3:.0f}", f"{pct(r['ttft'], .99) * 1e3:.0f}",
                         f"{pct(r['itl'], .5) * 1e3:.1f}", f"{pct(r['itl'], .99) * 1e3:.1f}",
                         f"{r['tokens'] / r['wall']:.1f}", f"{r['cpu'] * 1e3 / r['tokens']:.1f}"))
            print("  " + " ".join(rows[-1][2:]), flush=True)
    print_table(rows)
    print(f"# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    await engine.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    p.add_argument("--attn", default=ATTN_IMPLEMENTATION, help="sdpa or paged|eager")
    p.add_argument("--blocks", type=int, default=ServiceSettings.cpu_cache_blocks)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--kernels", default="native", choices=("native", "torch", "dense"),
                   help="native: AMX Q4_1 kernel where the CPU has AMX, else torch's; torch: torch's int4 kernel "
                        "for small steps and bf16 GEMM above; dense: bf16 GEMM only")
    p.add_argument("--baseline", action="store_true", help="also time plain model.generate")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
