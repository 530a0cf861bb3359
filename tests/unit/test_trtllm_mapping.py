"""The TensorRT-LLM adapter's pure mappings, checked against the fake's SamplingParams,
GuidedDecodingParams and KvCacheConfig (same names and defaults as upstream)."""
from __future__ import annotations

import pytest

from tests.fakes import fake_trtllm
from trtllm_service.engine.base import GuidedDecoding, SamplingConfig
from trtllm_service.engine.trtllm_api import guided_params, llm_kwargs, load_api, sampling_params, to_logprobs
from trtllm_service.settings import ServiceSettings


@pytest.fixture(scope="module")
def api():
    with fake_trtllm():
        yield load_api("pytorch")


def test_every_sampling_field_is_mapped(api):
    config = SamplingConfig(
        max_tokens=17, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, seed=1234,
        presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.1,
        stop_token_ids=(7, 9), min_tokens=3, ignore_eos=True, logprobs=4)
    params = sampling_params(api, config)
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.min_p) == (17, 0.7, 0.9, 40, 0.05)
    assert (params.seed, params.presence_penalty, params.frequency_penalty) == (1234, 0.5, 0.25)
    assert params.repetition_penalty == 1.1
    assert params.stop_token_ids == [7, 9]
    assert (params.min_tokens, params.ignore_eos, params.logprobs) == (3, True, 4)
    assert params.detokenize is False  # the service detokenises
    assert params.guided_decoding is None


def test_unset_fields_keep_the_library_defaults(api):
    params = sampling_params(api, SamplingConfig(max_tokens=5))
    defaults = api.SamplingParams()
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                 "frequency_penalty", "repetition_penalty", "stop_token_ids", "min_tokens", "logprobs"):
        assert getattr(params, name) == getattr(defaults, name), name
    assert params.max_tokens == 5 and defaults.max_tokens == 32  # why max_tokens is always set


def test_logprobs_zero_still_asks_for_the_sampled_token(api):
    # TensorRT-LLM treats logprobs=0 as off; ours means "the sampled token only"
    assert sampling_params(api, SamplingConfig(max_tokens=1, logprobs=0)).logprobs == 1


@pytest.mark.parametrize("guided, expected", [
    (GuidedDecoding(json_schema='{"type": "object"}'), {"json": '{"type": "object"}'}),
    (GuidedDecoding(json_object=True), {"json_object": True}),
    (GuidedDecoding(regex="[a-z]+"), {"regex": "[a-z]+"}),
    (GuidedDecoding(grammar='root ::= "x"'), {"grammar": 'root ::= "x"'}),
])
def test_guided_decoding_is_mapped(api, guided, expected):
    params = sampling_params(api, SamplingConfig(max_tokens=8, guided=guided))
    assert isinstance(params.guided_decoding, api.GuidedDecodingParams)
    for name in ("json", "regex", "grammar", "json_object"):
        assert getattr(params.guided_decoding, name) == expected.get(name, False if name == "json_object" else None)


def test_two_guides_are_refused_like_upstream(api):
    # GuidedDecodingParams itself accepts both; SamplingParams._validate refuses them
    two = GuidedDecoding(regex="a", grammar="b")
    assert guided_params(api, two).regex == "a"
    with pytest.raises(ValueError, match="Only one guide"):
        sampling_params(api, SamplingConfig(max_tokens=1, guided=two))


def test_out_of_range_values_raise_the_library_error(api):
    with pytest.raises(ValueError, match="top_p"):
        sampling_params(api, SamplingConfig(max_tokens=1, top_p=1.5))


def test_llm_kwargs_carry_the_memory_knobs(api):
    settings = ServiceSettings(engine="trtllm", model="/m", tensor_parallel_size=2,
                               kv_cache_free_gpu_memory_fraction=0.5, enable_block_reuse=False,
                               max_batch_size=64, max_num_tokens=4096, max_seq_len=2048)
    kwargs = llm_kwargs(api, settings)
    kv = kwargs.pop("kv_cache_config")
    assert (kv.free_gpu_memory_fraction, kv.enable_block_reuse) == (0.5, False)
    assert kwargs == {"tensor_parallel_size": 2, "max_batch_size": 64, "max_num_tokens": 4096,
                      "max_seq_len": 2048, "guided_decoding_backend": "xgrammar",
                      "enable_iter_perf_stats": True}


def test_stream_interval_reaches_the_pytorch_executor_only(api):
    assert llm_kwargs(api, ServiceSettings(engine="trtllm", model="/m", stream_interval=8))["stream_interval"] == 8
    assert "stream_interval" not in llm_kwargs(api, ServiceSettings(engine="trtllm", model="/m"))  # its default
    tensorrt = ServiceSettings(engine="trtllm", model="/m", trtllm_backend="tensorrt", stream_interval=8)
    assert "stream_interval" not in llm_kwargs(api, tensorrt)


def test_tensorrt_backend_gets_no_pytorch_only_arguments(api):
    settings = ServiceSettings(engine="trtllm", model="/m", trtllm_backend="tensorrt",
                               guided_decoding_backend="none", max_context_length=1024)
    kwargs = llm_kwargs(api, settings)
    assert "enable_iter_perf_stats" not in kwargs and "guided_decoding_backend" not in kwargs
    assert kwargs["max_seq_len"] == 1024  # the context cap also bounds the engine's KV budget


def test_logprob_dicts_become_token_logprobs(api):
    from tensorrt_llm.executor import Logprob  # the fake's mirror of upstream's Logprob

    entries = [{5: Logprob(-0.1, 1), 8: Logprob(-2.0, 2), 9: Logprob(-3.0, 3)},
               {4: Logprob(-0.5, 1), 6: Logprob(-1.5, 2)},
               -0.75]
    result = to_logprobs([5, 6, 3], entries, top_n=2)
    assert [(r.token_id, r.logprob) for r in result] == [(5, -0.1), (6, -1.5), (3, -0.75)]
    assert result[0].top == [(5, -0.1), (8, -2.0)]
    assert result[1].top == [(4, -0.5), (6, -1.5)]
    assert result[2].top == []
    assert to_logprobs([5], entries[:1], top_n=0)[0].top == []


def test_stream_guard_recovers_tokens_a_diff_missed():
    """If a diff does not line up with what was already sent (a skipped or coalesced
    response), the sent-count guard takes the tokens from `token_ids` instead."""
    from types import SimpleNamespace

    from trtllm_service.engine.trtllm import _Stream

    out = SimpleNamespace(token_ids=[11, 12], token_ids_diff=[11, 12], logprobs=[], logprobs_diff=[],
                          finish_reason=None, stop_reason=None)
    result = SimpleNamespace(outputs=[out], finished=False, cached_tokens=0)
    stream = _Stream(result=result, params=SimpleNamespace(end_id=2), top_n=-1)
    assert stream.step(eos_id=2).token_ids == [11, 12]
    out.token_ids, out.token_ids_diff = [11, 12, 13, 14], [14]  # one response was never seen
    assert stream.step(eos_id=2).token_ids == [13, 14]
    out.token_ids_diff = []
    result.finished, out.finish_reason = True, "stop"
    last = stream.step(eos_id=2)
    assert (last.token_ids, last.finish_reason, last.stop_token_id) == ([], "stop", 2)
