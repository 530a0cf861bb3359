#!/usr/bin/env python
"""One openai-SDK streaming client, run against several OpenAI-compatible servers; one table.

Each target is `name=base_url[,api]` where api is `responses` (default; our gateway) or
`chat` (Chat Completions, which every peer serves). For each concurrency level it sends
`--requests` streaming requests per level, `--concurrency` at a time, each asking for at most
`--max-tokens` greedy tokens, and reports per target: TTFT p50/p99 (first text delta),
output tokens/s (tokens the server reports in `usage`, over the level's wall time) and
errors. `scripts/bench_peers.sh` starts the peers and calls this.

    .venv/bin/python scripts/bench_peers.py --target ours=http://127.0.0.1:8080/v1 \\
        --target vllm=http://127.0.0.1:8001/v1,chat --levels 1 8
"""
from __future__ import annotations

import argparse
import asyncio
import time

import openai

PROMPTS = ["Tell me a story about a cat.", "Explain how a bicycle works.", "Write a poem about the sea.",
           "What should I cook tonight?", "Describe a walk in the mountains.", "How do plants grow?",
           "Give me tips for learning to code.", "Why is the sky blue?"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def one_responses(client, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    start, ttft, tokens = time.perf_counter(), None, 0
    stream = await client.responses.create(model=model, input=prompt, max_output_tokens=max_tokens,
                                           temperature=0, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta" and ttft is None:
            ttft = time.perf_counter() - start
        elif event.type in ("response.completed", "response.incomplete") and event.response.usage:
            tokens = event.response.usage.output_tokens
    return (ttft if ttft is not None else float("nan")), tokens


async def one_chat(client, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    start, ttft, tokens = time.perf_counter(), None, 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
        stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and ttft is None:
            ttft = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return (ttft if ttft is not None else float("nan")), tokens


async def level(target: dict, conc: int, requests: int, max_tokens: int) -> dict:
    client = openai.AsyncOpenAI(base_url=target["url"], api_key="bench", max_retries=0, timeout=600)
    model = target["model"] or (await client.models.list()).data[0].id
    one = one_responses if target["api"] == "responses" else one_chat
    gate = asyncio.Semaphore(conc)
    ttfts: list[float] = []
    tokens, errors = 0, 0

    async def run(i: int) -> None:
        nonlocal tokens, errors
        async with gate:
            try:
                ttft, n = await one(client, model, PROMPTS[i % len(PROMPTS)], max_tokens)
                ttfts.append(ttft)
                tokens += n
            except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                errors += 1
                print(f"# {target['name']}: {type(exc).__name__}: {str(exc)[:200]}")

    await one(client, model, "Hi", 16)  # warm-up, not measured (16: OpenAI's minimum max_output_tokens)
    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(requests)))
    wall = time.perf_counter() - start
    await client.close()
    return {"ttft50": pct(ttfts, 0.5), "ttft99": pct(ttfts, 0.99), "tps": tokens / wall, "errors": errors,
            "mean_tokens": tokens / max(1, requests - errors)}


def parse_target(text: str) -> dict:
    name, _, rest = text.partition("=")
    url, _, api = rest.partition(",")
    model = None
    if "@" in api:
        api, _, model = api.partition("@")
    return {"name": name, "url": url, "api": api or "responses", "model": model}


async def main(args) -> None:
    targets = [parse_target(t) for t in args.target]
    if not args.no_header:
        print("| server | conc | TTFT p50 ms | TTFT p99 ms | tok/s | mean tokens | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    for target in targets:
        for conc in args.levels:
            r = await level(target, conc, max(conc * args.waves, conc), args.max_tokens)
            print(f"| {target['name']} | {conc} | {r['ttft50'] * 1000:.0f} | {r['ttft99'] * 1000:.0f} | "
                  f"{r['tps']:.1f} | {r['mean_tokens']:.0f} | {r['errors']} |", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True, help="name=base_url[,responses|chat][@model]")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8])
    p.add_argument("--waves", type=int, default=3, help="requests per level = concurrency x waves")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--no-header", action="store_true", help="rows only (scripts/bench_peers.sh prints one header)")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
