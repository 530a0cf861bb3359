"""Validation of a request's sampling and structured-output fields, and the context budget.

Proto3 `optional` fields distinguish "unset" from zero: only fields the caller set are
checked and passed on; the rest stay `None` (engine default). `max_tokens` unset means
"as many as fit": the budget check fills it with the context left after the prompt.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .engine.base import Engine, GuidedDecoding, SamplingConfig
from .errors import ContextLengthExceeded, InvalidRequest

MAX_STOP_STRINGS = 16
MAX_TOP_LOGPROBS = 20

# field -> (check, message). Each check gets the value the caller set.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "temperature": (lambda v: 0.0 <= v <= 100.0, "must be between 0 and 100"),
    "top_p": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
    "top_k": (lambda v: v >= -1, "must be -1, 0 (disabled) or positive"),
    "min_p": (lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1"),
    "presence_penalty": (lambda v: -2.0 <= v <= 2.0, "must be between -2 and 2"),
    "frequency_penalty": (lambda v: -2.0 <= v <= 2.0, "must be between -2 and 2"),
    "repetition_penalty": (lambda v: v > 0.0, "must be greater than 0"),
    "max_tokens": (lambda v: v >= 1, "must be at least 1"),
    "top_logprobs": (lambda v: 0 <= v <= MAX_TOP_LOGPROBS, f"must be between 0 and {MAX_TOP_LOGPROBS}"),
}


def _set(params: pb.SamplingParams, name: str):
    return getattr(params, name) if params.HasField(name) else None


def _guided(request: pb.GenerateRequest, engine: Engine) -> GuidedDecoding | None:
    if not request.HasField("response_format"):
        return None
    fmt = request.response_format
    kind = fmt.WhichOneof("format")
    if kind is None:
        return None
    if not engine.supports_guided:
        raise InvalidRequest(f"structured output ({kind}) is not supported by the {engine.name} engine",
                             "response_format")
    if kind == "json_schema":
        try:
            schema = json.loads(fmt.json_schema.schema_json)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"json_schema.schema is not valid JSON: {exc.msg}",
                                 "response_format.json_schema") from None
        if not isinstance(schema, dict):
            raise InvalidRequest("json_schema.schema must be a JSON object", "response_format.json_schema")
        return GuidedDecoding(json_schema=fmt.json_schema.schema_json)
    if kind == "json_object":
        return GuidedDecoding(json_object=True)
    return GuidedDecoding(regex=fmt.regex)


def sampling_config(request: pb.GenerateRequest, engine: Engine) -> tuple[SamplingConfig, list[str]]:
    """Validated SamplingConfig (max_tokens provisional, see check_budget) and stop strings."""
    params = request.sampling
    for name, (ok, message) in _RANGES.items():
        value = _set(params, name)
        if value is not None and not ok(value):
            raise InvalidRequest(f"{name} {message}, got {value:g}", name)
    stops = list(params.stop)
    if len(stops) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings are allowed", "stop")
    wants_logprobs = bool(_set(params, "logprobs")) or _set(params, "top_logprobs") is not None
    if wants_logprobs and not engine.supports_logprobs:
        raise InvalidRequest(f"logprobs are not supported by the {engine.name} engine", "logprobs")
    top_k = _set(params, "top_k")
    config = SamplingConfig(
        max_tokens=_set(params, "max_tokens") or 0,
        temperature=_set(params, "temperature"), top_p=_set(params, "top_p"),
        top_k=top_k if top_k and top_k > 0 else None, min_p=_set(params, "min_p"),
        seed=_set(params, "seed"), presence_penalty=_set(params, "presence_penalty"),
        frequency_penalty=_set(params, "frequency_penalty"),
        repetition_penalty=_set(params, "repetition_penalty"),
        stop_token_ids=tuple(params.stop_token_ids), min_tokens=_set(params, "min_tokens") or 0,
        ignore_eos=bool(_set(params, "ignore_eos")),
        logprobs=(_set(params, "top_logprobs") or 0) if wants_logprobs else None,
        guided=_guided(request, engine),
    )
    return config, stops


def check_budget(config: SamplingConfig, prompt_len: int, context: int) -> SamplingConfig:
    """Fills or checks max_tokens against the context left after the prompt."""
    if config.max_tokens > context:
        raise InvalidRequest(f"max_tokens ({config.max_tokens}) exceeds the model's context length ({context})",
                             "max_tokens")
    if prompt_len >= context:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_len} tokens, which does not leave room for output in the "
            f"model's context length of {context}", "input")
    room = context - prompt_len
    if config.max_tokens == 0:
        config = dataclasses.replace(config, max_tokens=room)
    if config.max_tokens > room:
        raise ContextLengthExceeded(
            f"prompt ({prompt_len} tokens) plus max_tokens ({config.max_tokens}) exceeds the model's "
            f"context length of {context}", "max_tokens")
    if config.min_tokens > config.max_tokens:
        raise InvalidRequest(f"min_tokens ({config.min_tokens}) exceeds max_tokens ({config.max_tokens}), or the "
                             f"room the context leaves after the prompt", "min_tokens")
    return config
