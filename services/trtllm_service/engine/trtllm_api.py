"""TensorRT-LLM's API as the TensorRT-LLM engine (trtllm.py) uses it: the lazy import,
the LLM constructor arguments per backend, SamplingConfig -> SamplingParams /
GuidedDecodingParams, logprob conversion, --model checks and the context length.

Upstream files read (NVIDIA/TensorRT-LLM, 1.1/1.2 line): tensorrt_llm/llmapi/llm.py,
tensorrt_llm/llmapi/llm_args.py (KvCacheConfig, TorchLlmArgs.enable_iter_perf_stats),
tensorrt_llm/sampling_params.py, tensorrt_llm/executor/result.py (Logprob),
tensorrt_llm/_tensorrt_engine/__init__.py, tensorrt_llm/llmapi/utils.py (get_device_count).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import ServiceSettings
from .base import EngineUnavailable, GuidedDecoding, SamplingConfig, TokenLogprobs

# --trtllm-backend -> the LLM class for it.
BACKENDS: dict[str, str] = {
    "pytorch": "tensorrt_llm.llmapi:LLM",
    "tensorrt": "tensorrt_llm._tensorrt_engine:LLM",
}
# Arguments only one backend's LlmArgs accepts (the other raises "got invalid argument").
BACKEND_KWARGS: dict[str, dict[str, Any]] = {
    "pytorch": {"enable_iter_perf_stats": True},  # else the PyTorch runtime reports no stats
    "tensorrt": {},
}
# SamplingConfig fields passed through under the same SamplingParams name when set.
OPTIONAL_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                            "frequency_penalty", "repetition_penalty")
# GuidedDecoding field -> GuidedDecodingParams field.
GUIDES: dict[str, str] = {"json_schema": "json", "regex": "regex", "grammar": "grammar"}
FINISH_REASONS: dict[str, str] = {"stop": "stop", "length": "length", "cancelled": "cancelled"}


class TrtllmUnavailable(EngineUnavailable, ValueError):
    """The TensorRT-LLM engine cannot start here; the message says why.

    Also a ValueError so that main's "bad settings or unusable engine" clause (exit code 2,
    message only) catches it without knowing this class."""

    exit_code = 2


@dataclass(frozen=True)
class TrtllmApi:
    """The TensorRT-LLM names the engine uses, resolved once at start."""

    LLM: Any
    SamplingParams: Any
    GuidedDecodingParams: Any
    KvCacheConfig: Any
    RequestError: type
    device_count: Any


def load_api(backend: str) -> TrtllmApi:
    """Import tensorrt_llm (slow: run it off the event loop)."""
    try:
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        module_name, class_name = BACKENDS[backend].split(":")
        llm_cls = getattr(importlib.import_module(module_name), class_name)
        executor = importlib.import_module("tensorrt_llm.executor")
        utils = importlib.import_module("tensorrt_llm.llmapi.utils")
    except ImportError as exc:
        raise TrtllmUnavailable(
            f"--engine trtllm needs the tensorrt_llm package ({exc}); run inside the "
            "nvcr.io/nvidia/tensorrt-llm/release image or install it from NVIDIA's index") from exc
    except Exception as exc:  # e.g. OSError: libcuda.so missing on a host without a driver
        raise TrtllmUnavailable(f"tensorrt_llm failed to import: {exc}") from exc
    return TrtllmApi(llm_cls, llmapi.SamplingParams, llmapi.GuidedDecodingParams, llmapi.KvCacheConfig,
                     executor.RequestError, utils.get_device_count)


def check_model(settings: ServiceSettings) -> str:
    """The --model value TensorRT-LLM gets, or TrtllmUnavailable saying what is wrong."""
    if not settings.model:
        raise TrtllmUnavailable("--engine trtllm needs --model: an HF checkpoint directory, a hub id, "
                                "or (with --trtllm-backend tensorrt) a prebuilt engine directory")
    path = Path(settings.model).expanduser()
    if path.suffix.lower() == ".gguf":
        raise TrtllmUnavailable(f"--model {settings.model!r} is a GGUF file, which TensorRT-LLM does not "
                                "load; pass an HF checkpoint directory")
    if path.is_dir() and not (path / "config.json").is_file():
        raise TrtllmUnavailable(f"--model {settings.model!r} has no config.json: not a checkpoint or "
                                "engine directory")
    if not path.exists() and (settings.model.startswith((".", "/", "~")) or settings.model.count("/") > 1):
        raise TrtllmUnavailable(f"--model {settings.model!r} does not exist")
    return str(path) if path.exists() else settings.model


def llm_kwargs(api: TrtllmApi, settings: ServiceSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "tokenizer": settings.tokenizer,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "kv_cache_config": api.KvCacheConfig(
            free_gpu_memory_fraction=settings.kv_cache_free_gpu_memory_fraction,
            enable_block_reuse=settings.enable_block_reuse),
        "max_batch_size": settings.max_batch_size,
        "max_num_tokens": settings.max_num_tokens,
        "max_seq_len": settings.max_seq_len or settings.max_context_length,
        "guided_decoding_backend": guided_backend(settings),
        **BACKEND_KWARGS[settings.trtllm_backend],
    }
    if settings.trtllm_backend == "pytorch" and settings.stream_interval > 1:
        # The PyTorch executor then answers a streaming request on its first iteration, its last
        # and every Nth (py_executor.py), so it builds N times fewer responses; the service's
        # outbox (coalesce.py) applies the same rule to the messages it sends.
        kwargs["stream_interval"] = settings.stream_interval
    return {k: v for k, v in kwargs.items() if v is not None}


def guided_backend(settings: ServiceSettings) -> str | None:
    value = (settings.guided_decoding_backend or "").strip().lower()
    return None if value in ("", "none", "off") else value


def sampling_params(api: TrtllmApi, sampling: SamplingConfig) -> Any:
    """SamplingConfig -> SamplingParams. Raises ValueError for values TensorRT-LLM refuses."""
    kwargs: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "detokenize": False,
        "ignore_eos": sampling.ignore_eos,
    }
    for name in OPTIONAL_SAMPLING_FIELDS:
        if getattr(sampling, name) is not None:
            kwargs[name] = getattr(sampling, name)
    if sampling.min_tokens:
        kwargs["min_tokens"] = sampling.min_tokens
    if sampling.stop_token_ids:
        kwargs["stop_token_ids"] = list(sampling.stop_token_ids)
    if sampling.logprobs is not None:
        kwargs["logprobs"] = max(1, sampling.logprobs)  # TensorRT-LLM treats 0 as "off"
    if sampling.guided is not None:
        kwargs["guided_decoding"] = guided_params(api, sampling.guided)
    return api.SamplingParams(**kwargs)


def guided_params(api: TrtllmApi, guided: GuidedDecoding) -> Any:
    kwargs = {dst: getattr(guided, src) for src, dst in GUIDES.items() if getattr(guided, src) is not None}
    if guided.json_object:
        kwargs["json_object"] = True
    return api.GuidedDecodingParams(**kwargs)


def to_logprobs(token_ids: list[int], entries: list[Any], top_n: int) -> list[TokenLogprobs]:
    """TensorRT-LLM's per-token {id: Logprob(logprob, rank)} dicts (or bare floats) -> ours."""
    result = []
    # the engine may report logprobs for fewer tokens than it returned: those get none
    for token_id, entry in zip(token_ids, entries, strict=False):
        if not isinstance(entry, dict):
            result.append(TokenLogprobs(token_id, float(entry)))
            continue
        ranked = sorted(entry.items(), key=lambda kv: (kv[1].rank or 1 << 30, -kv[1].logprob))
        own = entry.get(token_id)
        # the sampled token is normally among the entries; if not, the lowest one bounds it
        logprob = own.logprob if own is not None else (ranked[-1][1].logprob if ranked else 0.0)
        top = [(int(i), float(lp.logprob)) for i, lp in ranked[:top_n]]
        result.append(TokenLogprobs(token_id, float(logprob), top))
    return result


def context_length(llm: Any, settings: ServiceSettings, model: str) -> int:
    """The model's context from the LLM's args, else its config.json; capped by the settings."""
    found = getattr(getattr(llm, "args", None), "max_seq_len", None)
    if not found:
        for directory in (Path(model), getattr(llm, "_hf_model_dir", None)):
            found = found or _config_context(directory)
    if not found and not settings.max_context_length:
        raise TrtllmUnavailable("cannot tell the model's context length; pass --max-context-length")
    caps = [n for n in (found, settings.max_context_length) if n]
    return int(min(caps))


def _config_context(directory: Any) -> int | None:
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, TypeError, ValueError):
        return None
    build = config.get("build_config") or {}
    for value in (build.get("max_seq_len"), config.get("max_position_embeddings"),
                  config.get("n_positions"), config.get("seq_length")):
        if isinstance(value, int) and value > 0:
            return value
    return None
