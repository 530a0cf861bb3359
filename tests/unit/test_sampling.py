"""Sampling validation (proto3 optional: only set fields are checked) and context budget."""
import pytest

from trtllm_responses.inference.v1 import inference_pb2 as pb
from trtllm_service.engine.base import SamplingConfig
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
