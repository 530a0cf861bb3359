"""Mirrors tensorrt_llm/llmapi/llm.py: RequestOutput, BaseLLM, _TrtLLM, _TorchLLM and LLM.

Mirrored behaviour:
- the constructor signature; unknown keyword arguments raise ValueError("<cls> got invalid
  argument: <key>"); `_TorchLLM` rejects TensorRT-backend-only arguments with ValueError;
- construction needs a GPU (the fake: `get_device_count()`; upstream fails in CUDA) and at
  least `tensor_parallel_size` of them ("Only N GPUs are available, but M are required.");
- `generate_async(inputs, sampling_params, ..., streaming)` must be called with a running
  event loop, raises RuntimeError("LLM is shutting down") after shutdown, fills end_id from
  the tokenizer (`_prepare_sampling_params`), and rejects a prompt longer than
  max_num_tokens without chunked prefill with ValueError (`_check_arguments`);
- `tokenizer` is a TransformersTokenizer; `args` carries max_seq_len, max_batch_size, ...;
- `get_stats_async(timeout)` returns the executor's one IterationResult;
- `shutdown()` aborts running requests (they end 'cancelled') and is idempotent.
The model directory must exist (the fake never downloads); its config.json supplies
max_position_embeddings, or build_config.max_seq_len for an engine directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .. import _fake
from ..executor.result import GenerationResult
from ..executor.worker import FakeExecutor
from ..sampling_params import SamplingParams
from .llm_args import BASE_FIELDS, GUIDED_BACKENDS, TORCH_ONLY_FIELDS, TRT_ONLY_FIELDS, FakeLlmArgs, KvCacheConfig
from .tokenizer import TokenizerBase, TransformersTokenizer, load_hf_tokenizer
from .utils import get_device_count


class RequestOutput(GenerationResult):
    def __init__(self) -> None:
        raise RuntimeError(
            f"{self.__class__.__name__} is designed to be instantiated using "
            f"{self.__class__.__name__}._from_generation_result by GenerationExecutor.")

    @classmethod
    def _from_generation_result(cls, generation_result: GenerationResult, prompt: str | None = None,
                                tokenizer: TokenizerBase | None = None) -> RequestOutput:
        inst = cls.__new__(cls)
        inst.__dict__.update(generation_result.__dict__)
        inst.tokenizer = tokenizer
        inst._prompt = prompt
        return inst

    @property
    def prompt(self) -> str | None:
        return self._prompt


class BaseLLM:
    _backend: str | None = None
    _allowed_fields = BASE_FIELDS

    def __init__(self, model: str | Path, tokenizer: str | Path | TokenizerBase | Any | None = None,
                 tokenizer_mode: Literal["auto", "slow"] = "auto", skip_tokenizer_init: bool = False,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, dtype: str = "auto",
                 revision: str | None = None, tokenizer_revision: str | None = None,
                 **kwargs: Any) -> None:
        self._executor: FakeExecutor | None = None
        _fake.CONTROLS.llm_kwargs.append(dict(model=model, tokenizer=tokenizer,
                                              tensor_parallel_size=tensor_parallel_size, **kwargs))
        for key in kwargs:
            if key not in self._allowed_fields:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        count = get_device_count()
        if count == 0:
            raise RuntimeError("No CUDA GPUs are available")
        if count < tensor_parallel_size:
            raise RuntimeError(f"Only {count} GPUs are available, but {tensor_parallel_size} are required.")
        guided = kwargs.get("guided_decoding_backend")
        if guided not in GUIDED_BACKENDS.get(self._backend, GUIDED_BACKENDS[None]):
            raise ValueError(f"Unsupported guided decoding backend {guided}")
        model_dir = Path(model)
        if not model_dir.is_dir():
            raise OSError(f"{model} is not a local directory and the fake cannot download models")
        config = json.loads((model_dir / "config.json").read_text())
        self.args = self._make_args(model, config, tensor_parallel_size, trust_remote_code, kwargs)
        self._hf_model_dir = model_dir
        if isinstance(tokenizer, TransformersTokenizer):
            self._tokenizer = tokenizer
        else:
            self._tokenizer = None if skip_tokenizer_init else load_hf_tokenizer(str(tokenizer or model_dir))
        self._executor = FakeExecutor(
            tokenizer=self._tokenizer, max_batch_size=self.args.max_batch_size,
            max_seq_len=self._effective_max_seq_len(config), kv_cache_config=self.args.kv_cache_config,
            iter_stats=self._produces_iteration_stats(), guided_backend=self.args.guided_decoding_backend)

    def _make_args(self, model, config: dict, tp: int, trust_remote_code: bool, kwargs: dict) -> FakeLlmArgs:
        known = {k: kwargs[k] for k in FakeLlmArgs.__dataclass_fields__ if k in kwargs}
        args = FakeLlmArgs(model=model, backend=self._backend, tensor_parallel_size=tp,
                           trust_remote_code=trust_remote_code, **known)
        if args.kv_cache_config is None:
            args.kv_cache_config = KvCacheConfig()
        build = config.get("build_config") or {}
        for key in ("max_batch_size", "max_seq_len", "max_num_tokens"):
            if key in build and getattr(args, key) is None:
                setattr(args, key, build[key])
        args.max_batch_size = args.max_batch_size or 2048
        args.max_num_tokens = args.max_num_tokens or 8192
        args.extra = {k: v for k, v in kwargs.items() if k not in known}
        return args

    def _effective_max_seq_len(self, config: dict) -> int:
        return self.args.max_seq_len or config.get("max_position_embeddings") or 2048

    def _produces_iteration_stats(self) -> bool:
        return True  # the C++ executor of the TensorRT backend reports stats by default

    @property
    def tokenizer(self) -> TokenizerBase | None:
        return self._tokenizer

    def generate_async(self, inputs, sampling_params: SamplingParams | None = None,
                       lora_request=None, prompt_adapter_request=None, streaming: bool = False,
                       kv_cache_retention_config=None, disaggregated_params=None, _postproc_params=None,
                       scheduling_params=None, cache_salt: str | None = None) -> RequestOutput:
        if self._executor is None or self._executor.is_shutdown():
            raise RuntimeError("LLM is shutting down")
        sampling_params = self._prepare_sampling_params(sampling_params)
        if isinstance(inputs, str):
            inputs = {"prompt": inputs}
        elif isinstance(inputs, list):
            inputs = {"prompt_token_ids": inputs}
        if "prompt_token_ids" in inputs:
            prompt_token_ids, prompt = list(inputs["prompt_token_ids"]), None
        elif "prompt" in inputs:
            prompt = inputs["prompt"]
            prompt_token_ids = self.tokenizer.encode(prompt, add_special_tokens=sampling_params.add_special_tokens)
        else:
            raise TypeError(f"The inputs must be type str or list of int, but got {type(inputs)}")
        self._check_arguments(len(prompt_token_ids))
        result = GenerationResult(self._executor.next_request_id(), prompt_token_ids, sampling_params,
                                  self._executor, streaming)
        output = RequestOutput._from_generation_result(result, prompt, self.tokenizer)
        self._executor.submit(output)
        return output

    def _prepare_sampling_params(self, sampling_params: SamplingParams | None) -> SamplingParams:
        if sampling_params is None:
            sampling_params = SamplingParams()
        if not isinstance(sampling_params, SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, "
                            f"but got {type(sampling_params)}")
        if sampling_params.end_id is None:
            if self.tokenizer is None:
                raise ValueError("tokenizer is required to reset end_id if it is None, or you can "
                                 "explicitly specify the end_id for sampling_params")
            sampling_params._setup(self.tokenizer)
        return sampling_params

    def _check_arguments(self, prompt_len: int) -> None:
        max_num_tokens = self.args.max_num_tokens
        if self._backend == "pytorch" and not self.args.enable_chunked_prefill and max_num_tokens \
                and prompt_len > max_num_tokens:
            raise ValueError(f"The sum of prompt length ({float(prompt_len)}), query length (0) should not "
                             f"exceed max_num_tokens ({max_num_tokens})")

    def get_stats_async(self, timeout: float | None = 2):
        return self._executor.aget_stats(timeout=timeout)

    def shutdown(self) -> None:
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        self.shutdown()
        return False


class _TrtLLM(BaseLLM):
    _backend = None  # TrtLlmArgs.backend stays None
    _allowed_fields = BASE_FIELDS | TRT_ONLY_FIELDS


class _TorchLLM(BaseLLM):
    _backend = "pytorch"
    _allowed_fields = BASE_FIELDS | TORCH_ONLY_FIELDS

    def __init__(self, model: str | Path, tokenizer=None, tokenizer_mode: Literal["auto", "slow"] = "auto",
                 skip_tokenizer_init: bool = False, trust_remote_code: bool = False,
                 tensor_parallel_size: int = 1, dtype: str = "auto", revision: str | None = None,
                 tokenizer_revision: str | None = None, **kwargs: Any) -> None:
        trt_only = [key for key in kwargs if key in TRT_ONLY_FIELDS]
        if trt_only:
            raise ValueError(f"The following arguments are specific to TensorRT backend and cannot be used "
                             f"with PyTorch backend: {trt_only}.\nPlease use 'from "
                             f"tensorrt_llm._tensorrt_engine import LLM' instead to use the TensorRT backend.")
        super().__init__(model, tokenizer, tokenizer_mode, skip_tokenizer_init, trust_remote_code,
                         tensor_parallel_size, dtype, revision, tokenizer_revision, **kwargs)

    def _produces_iteration_stats(self) -> bool:
        return bool(self.args.enable_iter_perf_stats)  # PyTorch: off unless asked for


class LLM(_TorchLLM):
    pass
