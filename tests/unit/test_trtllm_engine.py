"""TrtllmEngine end to end over the fake tensorrt_llm: streaming, finish reasons, logprobs,
structured output, cancellation, abort and error mapping."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.fakes import fake_trtllm, write_checkpoint
from trtllm_service.engine.base import EngineError, EngineRejected, GuidedDecoding, SamplingConfig, TokenStep
from trtllm_service.engine.trtllm import TrtllmEngine
from trtllm_service.settings import ServiceSettings

SENTENCE = "The quick brown fox jumps over the lazy dog."
LONG = SamplingConfig(max_tokens=100_000, ignore_eos=True)  # ends only when cancelled


@pytest.fixture(scope="module")
def fake():
    with fake_trtllm() as module:
        yield module


@pytest.fixture(scope="module")
async def engine(fake, tmp_path_factory):
    model = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "Tiny-Chat", max_position_embeddings=512)
    engine = TrtllmEngine(ServiceSettings(engine="trtllm", model=str(model)))
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture(autouse=True)
def clean_controls(fake):
    fake._fake.reset()


async def collect(engine, sampling, prompt=(1, 2, 3), request_id="r") -> list[TokenStep]:
    return [step async for step in engine.generate(request_id, list(prompt), sampling)]


def ids_of(steps):
    return [t for s in steps for t in s.token_ids]


async def test_ready_after_start(engine):
    assert engine.health()
    assert engine.model_id == "Tiny-Chat"
    assert engine.max_context_length == 512  # from config.json: the PyTorch args leave it unset
    assert engine.supports_guided
    assert "{{" in engine.tokenizer.chat_template  # the real HF tokenizer, template included


async def test_stream_ends_at_end_of_sequence(engine):
    steps = await collect(engine, SamplingConfig(max_tokens=50))
    assert engine.tokenizer.decode(ids_of(steps)) == SENTENCE
    assert all(s.finish_reason is None for s in steps[:-1])
    last = steps[-1]
    assert last.finish_reason == "stop" and last.stop_token_id == engine.tokenizer.eos_token_id
    assert engine.tokenizer.eos_token_id not in ids_of(steps)
    assert all(s.logprobs is None for s in steps)


async def test_max_tokens_ends_with_length(engine):
    steps = await collect(engine, SamplingConfig(max_tokens=3))
    assert len(ids_of(steps)) == 3 and steps[-1].finish_reason == "length"
    assert steps[-1].stop_token_id is None


async def test_stop_token_id_ends_and_is_named(engine):
    third = engine.tokenizer.encode(SENTENCE, add_special_tokens=False)[2]
    steps = await collect(engine, SamplingConfig(max_tokens=50, stop_token_ids=(third,)))
    assert steps[-1].finish_reason == "stop" and steps[-1].stop_token_id == third
    assert len(ids_of(steps)) == 2  # TensorRT-LLM cuts the stop id from the output


async def test_min_tokens_and_ignore_eos_run_past_the_end(engine):
    n = len(engine.tokenizer.encode(SENTENCE, add_special_tokens=False))
    for sampling in (SamplingConfig(max_tokens=n + 4, min_tokens=n + 2),
                     SamplingConfig(max_tokens=n + 4, ignore_eos=True)):
        steps = await collect(engine, sampling)
        assert len(ids_of(steps)) == n + 4 and steps[-1].finish_reason == "length"


async def test_logprobs_follow_the_tokens(engine):
    steps = await collect(engine, SamplingConfig(max_tokens=4, logprobs=2))
    pairs = [(t, lp) for s in steps for t, lp in zip(s.token_ids, s.logprobs, strict=True)]
    assert len(pairs) == 4
    for token, lp in pairs:
        assert lp.token_id == token and lp.logprob < 0 and len(lp.top) == 2 and lp.top[0][0] == token
    only_sampled = await collect(engine, SamplingConfig(max_tokens=2, logprobs=0))
    assert [lp.top for s in only_sampled for lp in s.logprobs] == [[], []]


async def test_logprobs_after_a_stop_token_stay_aligned(engine):
    third = engine.tokenizer.encode(SENTENCE, add_special_tokens=False)[2]
    steps = await collect(engine, SamplingConfig(max_tokens=9, stop_token_ids=(third,), logprobs=1))
    assert [len(s.logprobs) for s in steps] == [len(s.token_ids) for s in steps]


async def test_guided_json_reaches_the_engine(fake, engine):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}}
    guided = GuidedDecoding(json_schema=json.dumps(schema))
    steps = await collect(engine, SamplingConfig(max_tokens=64, guided=guided))
    assert json.loads(engine.tokenizer.decode(ids_of(steps))) == {"name": "fake", "n": 0}
    assert fake._fake.CONTROLS.sampling_params[-1].guided_decoding.json == json.dumps(schema)


async def test_closing_the_iterator_aborts(fake, engine):
    stream = engine.generate("close-me", [1, 2, 3], LONG)
    assert (await anext(stream)).token_ids
    result = engine._streams["close-me"].result
    await stream.aclose()
    assert fake._fake.CONTROLS.aborted_ids == [result.request_id]
    assert result.finished and result.outputs[0].finish_reason == "cancelled"
    assert "close-me" not in engine._streams


async def test_cancelling_the_task_aborts(fake, engine):
    first = asyncio.Event()

    async def consume():
        async for _ in engine.generate("task", [1, 2, 3], LONG):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    result = engine._streams["task"].result
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert result.finished and result.outputs[0].finish_reason == "cancelled"
    assert fake._fake.CONTROLS.aborted_ids == [result.request_id]


async def test_prompt_over_max_seq_len_is_rejected(engine):
    # arrives as a RequestError on the first iteration (upstream's IPC path)
    with pytest.raises(EngineRejected, match="max_seq_len"):
        await collect(engine, SamplingConfig(max_tokens=4), prompt=[1] * 600)


async def test_invalid_sampling_is_rejected(engine):
    with pytest.raises(EngineRejected, match="top_k"):
        await collect(engine, SamplingConfig(max_tokens=4, top_k=-1))


async def test_failure_after_tokens_is_an_engine_error(fake, engine):
    fake._fake.CONTROLS.fail_after_tokens = 2
    steps = []
    with pytest.raises(EngineError, match="injected request failure"):
        async for step in engine.generate("mid", [1, 2, 3], SamplingConfig(max_tokens=20)):
            steps.append(step)
    assert len(ids_of(steps)) == 2
    assert engine.health()  # a per-request error leaves the engine serving


async def test_request_id_is_free_after_the_stream(engine):
    await collect(engine, SamplingConfig(max_tokens=2), request_id="again")
    await collect(engine, SamplingConfig(max_tokens=2), request_id="again")
    assert "again" not in engine._streams
