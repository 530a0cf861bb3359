"""Sampling validation (proto3 optional: only set fields are checked) and context budget."""
import pytest

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_service.engine.base import GuidedDecoding, SamplingConfig
from trtllm_service.errors import ContextLengthExceeded, InvalidRequest
from trtllm_service.sampling import check_budget, sampling_config


class _Engine:
    name = "test"
    supports_logprobs = True
    supports_guided = False


def cfg(**sampling):
    return sampling_config(pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(**sampling)), _Engine())


def test_unset_fields_stay_none_and_zero_is_kept():
    config, stops = cfg(temperature=0.0)
    assert config.temperature == 0.0 and config.top_p is None and config.seed is None
    assert config.logprobs is None and stops == []


@pytest.mark.parametrize("field,value", [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("min_p", 2.0),
                                         ("presence_penalty", 3.0), ("repetition_penalty", 0.0),
                                         ("max_tokens", 0), ("top_logprobs", 21), ("top_k", -5)])
def test_out_of_range_rejected_with_param(field, value):
    with pytest.raises(InvalidRequest) as err:
        cfg(**{field: value})
    assert err.value.param == field


def test_logprobs_and_stops():
    config, stops = cfg(top_logprobs=3, stop=["a", "b"], stop_token_ids=[7])
    assert config.logprobs == 3 and stops == ["a", "b"] and config.stop_token_ids == (7,)


def test_structured_output_rejected_when_engine_lacks_it():
    req = pb.GenerateRequest(prompt="x", response_format=pb.ResponseFormat(json_object=True))
    with pytest.raises(InvalidRequest) as err:
        sampling_config(req, _Engine())
    assert err.value.param == "response_format"


def test_budget_fills_max_tokens():
    assert check_budget(SamplingConfig(max_tokens=0), 100, 1000).max_tokens == 900


@pytest.mark.parametrize("max_tokens,prompt,exc,param", [
    (2000, 10, InvalidRequest, "max_tokens"), (0, 1000, ContextLengthExceeded, "input"),
    (500, 600, ContextLengthExceeded, "max_tokens")])
def test_budget_errors(max_tokens, prompt, exc, param):
    with pytest.raises(exc) as err:
        check_budget(SamplingConfig(max_tokens=max_tokens), prompt, 1000)
    assert err.value.param == param


@pytest.mark.parametrize("max_tokens,min_tokens", [(10, 11), (0, 2**32 - 1), (0, 901)])
def test_min_tokens_beyond_max_tokens_or_the_room_left_is_rejected(max_tokens, min_tokens):
    """min_tokens 2^32-1 used to run until the deadline; above max_tokens it was accepted."""
    with pytest.raises(InvalidRequest) as err:
        check_budget(SamplingConfig(max_tokens=max_tokens, min_tokens=min_tokens), 100, 1000)
    assert err.value.param == "min_tokens"
    assert check_budget(SamplingConfig(max_tokens=0, min_tokens=900), 100, 1000).min_tokens == 900


class _GuidedEngine(_Engine):
    supports_guided = True


class _NoLogprobsEngine(_Engine):
    supports_logprobs = False


def test_every_set_field_reaches_the_config():
    config, stops = cfg(temperature=0.5, top_p=0.75, top_k=40, min_p=0.125, seed=2**64 - 1, presence_penalty=-1.5,
                        frequency_penalty=2.0, repetition_penalty=1.25, max_tokens=64, min_tokens=3,
                        ignore_eos=True, stop_token_ids=[2, 3], stop=["END", "\n\n"])
    # values exact in float32, so the proto round trip keeps them exactly
    assert (config.temperature, config.top_p, config.top_k, config.min_p, config.seed) == (0.5, 0.75, 40, 0.125,
                                                                                            2**64 - 1)
    assert (config.presence_penalty, config.frequency_penalty, config.repetition_penalty) == (-1.5, 2.0, 1.25)
    assert (config.max_tokens, config.min_tokens, config.ignore_eos) == (64, 3, True)
    assert config.stop_token_ids == (2, 3) and stops == ["END", "\n\n"]
    assert config.logprobs is None and config.guided is None


def test_an_empty_request_is_all_engine_defaults():
    config, stops = cfg()
    assert config == SamplingConfig(max_tokens=0) and stops == []  # max_tokens 0: filled by check_budget


@pytest.mark.parametrize("top_k, expected", [(0, None), (-1, None), (1, 1), (50, 50)])
def test_top_k_zero_and_minus_one_disable_it(top_k, expected):
    assert cfg(top_k=top_k)[0].top_k == expected


@pytest.mark.parametrize("field, value, attr, expected", [
    ("temperature", 0.0, "temperature", 0.0), ("temperature", 100.0, "temperature", 100.0),
    ("top_p", 1.0, "top_p", 1.0), ("min_p", 0.0, "min_p", 0.0), ("min_p", 1.0, "min_p", 1.0),
    ("presence_penalty", -2.0, "presence_penalty", -2.0), ("frequency_penalty", 2.0, "frequency_penalty", 2.0),
    ("max_tokens", 1, "max_tokens", 1), ("top_logprobs", 0, "logprobs", 0), ("top_logprobs", 20, "logprobs", 20),
    ("top_k", -1, "top_k", None)])
def test_range_bounds_are_accepted(field, value, attr, expected):
    assert getattr(cfg(**{field: value})[0], attr) == expected


def test_the_error_names_the_field_and_the_value():
    with pytest.raises(InvalidRequest) as err:
        cfg(temperature=150.0)
    assert str(err.value) == "temperature must be between 0 and 100, got 150" and err.value.param == "temperature"


@pytest.mark.parametrize("fields, expected", [({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": 5}, 5),
                                              ({"top_logprobs": 2}, 2), ({"top_logprobs": 0}, 0),
                                              ({"logprobs": False}, None)])
def test_logprobs_count_is_the_top_n_and_zero_means_the_sampled_token_only(fields, expected):
    assert cfg(**fields)[0].logprobs == expected


def test_logprobs_on_an_engine_without_them_are_refused():
    request = pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(top_logprobs=1))
    with pytest.raises(InvalidRequest) as err:
        sampling_config(request, _NoLogprobsEngine())
    assert err.value.param == "logprobs"
    assert sampling_config(pb.GenerateRequest(prompt="x"), _NoLogprobsEngine())[0].logprobs is None


def test_at_most_16_stop_strings():
    assert len(cfg(stop=[str(i) for i in range(16)])[1]) == 16
    with pytest.raises(InvalidRequest) as err:
        cfg(stop=[str(i) for i in range(17)])
    assert err.value.param == "stop"


def _guided(**fmt) -> object:
    request = pb.GenerateRequest(prompt="x", response_format=pb.ResponseFormat(**fmt))
    return sampling_config(request, _GuidedEngine())[0].guided


def test_structured_output_becomes_one_guide():
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}}'
    assert _guided(json_schema=pb.JsonSchemaFormat(name="t", schema_json=schema)) == GuidedDecoding(json_schema=schema)
    assert _guided(json_object=True) == GuidedDecoding(json_object=True)
    assert _guided(regex="[0-9]+") == GuidedDecoding(regex="[0-9]+")
    assert _guided() is None  # the message set, no format chosen


@pytest.mark.parametrize("schema", ["{not json", "[1, 2]", '"a string"'])
def test_a_schema_that_is_not_a_json_object_is_refused(schema):
    with pytest.raises(InvalidRequest) as err:
        _guided(json_schema=pb.JsonSchemaFormat(name="t", schema_json=schema))
    assert err.value.param == "response_format.json_schema"


def test_budget_keeps_a_max_tokens_that_fits_and_allows_the_last_token():
    assert check_budget(SamplingConfig(max_tokens=10), 100, 1000).max_tokens == 10
    assert check_budget(SamplingConfig(max_tokens=1), 999, 1000).max_tokens == 1
    assert check_budget(SamplingConfig(max_tokens=0, min_tokens=1), 999, 1000).max_tokens == 1
