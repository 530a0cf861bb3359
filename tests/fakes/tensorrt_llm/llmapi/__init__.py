"""Mirrors tensorrt_llm/llmapi/__init__.py (the names the adapter uses)."""
from ..executor import CompletionOutput, RequestError
from ..sampling_params import GuidedDecodingParams, SamplingParams
from .llm import LLM, RequestOutput
from .llm_args import KvCacheConfig

__all__ = ["LLM", "CompletionOutput", "RequestOutput", "GuidedDecodingParams", "SamplingParams",
           "KvCacheConfig", "RequestError"]
