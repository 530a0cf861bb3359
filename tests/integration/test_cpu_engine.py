"""The CPU engine (llama.cpp) on the real default model (SmolLM2-135M), at the Engine contract level."""
from __future__ import annotations

import asyncio
import threading
import time
from contextlib import aclosing

import pytest

from trtllm_service.engine.base import EngineRejected, SamplingConfig, TokenStep

pytestmark = pytest.mark.asyncio(loop_scope="session")


def chat(engine, text: str) -> list[int]:
    return chat_messages(engine, [{"role": "user", "content": text}])


def chat_messages(engine, messages: list[dict]) -> list[int]:
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return list(ids["input_ids"]) if not isinstance(ids, list) else list(ids)


async def run(engine, rid: str, prompt: list[int], sampling: SamplingConfig) -> tuple[list[int], list[TokenStep]]:
    tokens, steps = [], []
    async for step in engine.generate(rid, prompt, sampling):
        steps.append(step)
        tokens.extend(step.token_ids)
    return tokens, steps


async def wait_until_idle(engine, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while engine.load().running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_engine_is_ready(cpu_engine):
    assert cpu_engine.health()
    assert cpu_engine.model_id == "SmolLM2-135M-Instruct"
    assert 0 < cpu_engine.max_context_length <= 8192
    assert "<|im_start|>" in cpu_engine.tokenizer.chat_template


async def test_streams_sensible_text_and_stops_at_eos(cpu_engine):
    tokens, steps = await run(cpu_engine, "sum", chat(cpu_engine, "What is 2+2?"), SamplingConfig(max_tokens=40))
    assert len(steps) > 1 and all(s.token_ids for s in steps[:-1])
    assert all(s.finish_reason is None for s in steps[:-1])
    assert "4" in cpu_engine.tokenizer.decode(tokens)
    assert steps[-1].finish_reason == "stop"
    assert steps[-1].stop_token_id == cpu_engine.tokenizer.eos_token_id
    assert cpu_engine.tokenizer.eos_token_id not in tokens


async def test_max_tokens_ends_with_length(cpu_engine):
    tokens, steps = await run(cpu_engine, "len", chat(cpu_engine, "Tell me a long story."),
                              SamplingConfig(max_tokens=7))
    assert len(tokens) == 7
    assert steps[-1].finish_reason == "length"
    assert steps[-1].stop_token_id is None


async def test_stop_token_id_ends_the_request(cpu_engine):
    prompt = chat(cpu_engine, "Which city is the capital of France?")
    first, _ = await run(cpu_engine, "probe", prompt, SamplingConfig(max_tokens=3))
    tokens, steps = await run(cpu_engine, "stopid", prompt, SamplingConfig(max_tokens=20, stop_token_ids=(first[1],)))
    assert tokens == first[:1]
    assert (steps[-1].finish_reason, steps[-1].stop_token_id) == ("stop", first[1])


async def test_min_tokens_suppresses_eos(cpu_engine):
    prompt = chat(cpu_engine, "Which city is the capital of France?")
    natural, _ = await run(cpu_engine, "natural", prompt, SamplingConfig(max_tokens=40))
    want = len(natural) + 5
    tokens, steps = await run(cpu_engine, "min", prompt, SamplingConfig(max_tokens=want, min_tokens=want))
    assert len(tokens) == want and steps[-1].finish_reason == "length"


async def test_greedy_is_deterministic(cpu_engine):
    prompt = chat(cpu_engine, "Name three colours.")
    a, _ = await run(cpu_engine, "g1", prompt, SamplingConfig(max_tokens=16, temperature=0.0))
    b, _ = await run(cpu_engine, "g2", prompt, SamplingConfig(max_tokens=16))
    assert a == b and len(a) > 3


async def test_seed_reproduces_sampling(cpu_engine):
    prompt = chat(cpu_engine, "Write a sentence about the moon.")
    sampling = SamplingConfig(max_tokens=24, temperature=1.2, top_p=0.95, top_k=100, seed=1234, ignore_eos=True)
    a, _ = await run(cpu_engine, "s1", prompt, sampling)
    b, _ = await run(cpu_engine, "s2", prompt, sampling)
    c, _ = await run(cpu_engine, "s3", prompt, SamplingConfig(**{**sampling.__dict__, "seed": 99}))
    assert a == b
    assert a != c


async def test_penalties_change_greedy_output(cpu_engine):
    prompt = chat(cpu_engine, "Repeat the word 'cat' many times.")
    plain, _ = await run(cpu_engine, "p0", prompt, SamplingConfig(max_tokens=16, ignore_eos=True))
    penalised, _ = await run(cpu_engine, "p1", prompt,
                             SamplingConfig(max_tokens=16, ignore_eos=True, frequency_penalty=2.0,
                                            presence_penalty=2.0, repetition_penalty=1.5))
    assert plain != penalised
    assert len(set(penalised)) == len(penalised)  # a 2.0 presence penalty forbids repeats here


async def test_logprobs_match_tokens(cpu_engine):
    tokens, steps = await run(cpu_engine, "lp", chat(cpu_engine, "Say hello."),
                              SamplingConfig(max_tokens=10, logprobs=3, ignore_eos=True))
    logprobs = [lp for s in steps for lp in (s.logprobs or [])]
    assert len(logprobs) == len(tokens) == 10
    for token, lp in zip(tokens, logprobs, strict=True):
        assert lp.token_id == token and lp.logprob <= 0.0
        assert len(lp.top) == 3
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
        assert lp.top[0][1] >= lp.logprob  # greedy: the sampled token is the most likely one
    assert all(s.logprobs is None for s in (await run(cpu_engine, "nolp", chat(cpu_engine, "Hi"),
                                                      SamplingConfig(max_tokens=3)))[1])


async def test_concurrent_requests_are_batched(cpu_engine):
    prompt = chat(cpu_engine, "Tell me about the ocean.")
    sampling = SamplingConfig(max_tokens=32, ignore_eos=True)
    peak = 0

    async def one(i: int) -> list[int]:
        nonlocal peak
        tokens = []
        async for step in cpu_engine.generate(f"conc-{i}", prompt, sampling):
            peak = max(peak, cpu_engine.load().running)
            tokens.extend(step.token_ids)
        return tokens

    steps_before = cpu_engine._loop.stats.steps
    results = await asyncio.gather(*(one(i) for i in range(8)))
    steps = cpu_engine._loop.stats.steps - steps_before
    assert all(len(r) == 32 for r in results)
    assert peak >= 4  # decoded together, not one after another
    assert steps < 2 * 32  # 8 x 32 tokens in about 32 batched steps, not 256 single ones


async def test_closing_the_stream_frees_the_slot(cpu_engine):
    prompt = chat(cpu_engine, "Tell me a very long story.")
    got = 0
    async with aclosing(cpu_engine.generate("closer", prompt, SamplingConfig(max_tokens=200, ignore_eos=True))) as it:
        async for step in it:
            got += len(step.token_ids)
            if got >= 3:
                break
    await wait_until_idle(cpu_engine)
    assert cpu_engine.load().running == 0
    assert "closer" not in cpu_engine._requests


async def test_cancelling_the_consumer_task_frees_the_slot(cpu_engine):
    prompt = chat(cpu_engine, "Tell me a very long story.")
    first = asyncio.Event()

    async def consume():
        async for _ in cpu_engine.generate("cancelled-task", prompt, SamplingConfig(max_tokens=200, ignore_eos=True)):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_idle(cpu_engine)
    assert cpu_engine.load().running == 0


@pytest.mark.parametrize("sampling, prompt_len, match", [
    (SamplingConfig(max_tokens=4), 0, "empty"),
    (SamplingConfig(max_tokens=10**6), 3, "context length"),
    (SamplingConfig(max_tokens=4, top_p=1.5), 3, "top_p"),
    (SamplingConfig(max_tokens=4, stop_token_ids=(10**7,)), 3, "vocabulary"),
    (SamplingConfig(max_tokens=4, logprobs=50), 3, "logprobs"),
])
async def test_bad_requests_are_rejected(cpu_engine, sampling, prompt_len, match):
    with pytest.raises(EngineRejected, match=match) as err:
        await run(cpu_engine, "bad", [1] * prompt_len, sampling)
    assert "bad" not in cpu_engine._requests
    if match in ("vocabulary", "top_p", "logprobs"):  # the field is named for x-error-param
        assert err.value.param == {"vocabulary": "stop_token_ids"}.get(match, match)


async def test_a_request_id_is_taken_while_its_grammar_compiles(cpu_engine):
    from trtllm_service.engine.base import GuidedDecoding

    sampling = SamplingConfig(max_tokens=4, guided=GuidedDecoding(regex="[a-z]{1,3}"))
    prompt = chat(cpu_engine, "Say a word.")
    first = asyncio.create_task(run(cpu_engine, "same-id", prompt, sampling))
    await asyncio.sleep(0)  # the first is now compiling its grammar, off the loop
    with pytest.raises(EngineRejected, match="already running"):
        await run(cpu_engine, "same-id", prompt, sampling)
    tokens, steps = await first
    assert steps[-1].finish_reason in ("stop", "length") and tokens


async def test_service_tokenizer_agrees_with_llama_cpp_vocabulary(cpu_engine):
    runtime, tokenizer = cpu_engine.runtime, cpu_engine.tokenizer
    assert runtime.n_vocab == len(tokenizer)
    for text in ["Hello world", "  two spaces\n\ttab, ünïcødé and 😀 emoji", "def f(x):\n    return x ** 2",
                 "<|im_start|>user\nhi<|im_end|>\n", "1234567 + 89 = ?"]:
        assert tokenizer.encode(text) == runtime.tokenize(text), text
    for token_id in range(0, runtime.n_vocab, 97):
        piece = runtime.piece(token_id)
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a multi-byte character: no text of its own to compare
        assert tokenizer.decode([token_id]) == text, token_id
    assert tokenizer.eos_token_id in runtime.eog_ids()


async def test_decoding_does_not_hold_the_gil(cpu_engine, monkeypatch):
    """The event loop keeps running while llama_decode runs on the engine thread."""
    real = cpu_engine.runtime.decode
    in_decode = threading.Event()

    def traced(*args):
        in_decode.set()
        try:
            return real(*args)
        finally:
            in_decode.clear()

    monkeypatch.setattr(cpu_engine.runtime, "decode", traced)
    ticks_in_decode = 0
    done = asyncio.Event()

    async def heartbeat():
        nonlocal ticks_in_decode
        while not done.is_set():
            await asyncio.sleep(0.001)
            ticks_in_decode += in_decode.is_set()

    beat = asyncio.create_task(heartbeat())
    prompt = chat(cpu_engine, "Summarise: " + "the quick brown fox jumps over the lazy dog " * 60)
    await run(cpu_engine, "gil", prompt, SamplingConfig(max_tokens=4))
    done.set()
    await beat
    # Held, the GIL would allow a tick only in the instants around each call (a handful);
    # released, the loop ticks every millisecond of a prefill that takes seconds.
    assert ticks_in_decode > 100


async def test_a_repeated_prefix_is_reused_and_reported(cpu_engine):
    history = [{"role": "user", "content": "My name is Ada. Remember it, please."}]
    first_prompt = chat_messages(cpu_engine, history)
    tokens, _ = await run(cpu_engine, "turn-1", first_prompt, SamplingConfig(max_tokens=12))
    history += [{"role": "assistant", "content": cpu_engine.tokenizer.decode(tokens)},
                {"role": "user", "content": "What is my name?"}]
    second_prompt = chat_messages(cpu_engine, history)
    _, steps = await run(cpu_engine, "turn-2", second_prompt, SamplingConfig(max_tokens=8))
    cached = max(s.cached_tokens for s in steps)
    assert len(first_prompt) <= cached < len(second_prompt)
    assert cpu_engine.load().kv_cache_hit_rate > 0


async def test_a_long_prompt_is_prefilled_in_chunks_while_streams_flow(cpu_engine):
    order: list[str] = []
    long_prompt = chat(cpu_engine, "Summarise: " + "a quick brown fox jumps over a lazy dog " * 90)
    assert len(long_prompt) > 3 * cpu_engine.settings.cpu_step_tokens
    started = asyncio.Event()

    async def stream():
        async for step in cpu_engine.generate("flowing", chat(cpu_engine, "Tell me a long story."),
                                              SamplingConfig(max_tokens=120, ignore_eos=True)):
            order.extend("s" * len(step.token_ids))
            started.set()

    async def long():
        await started.wait()
        order.append("submitted")
        async for step in cpu_engine.generate("long", long_prompt, SamplingConfig(max_tokens=2, ignore_eos=True)):
            order.extend("L" * len(step.token_ids))

    await asyncio.gather(stream(), long())
    between = order[order.index("submitted"):order.index("L")]
    # one streamed token per step while the long prompt's chunks go through
    assert between.count("s") >= len(long_prompt) // cpu_engine.settings.cpu_step_tokens - 1
