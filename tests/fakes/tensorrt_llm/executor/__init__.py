"""Mirrors tensorrt_llm/executor/__init__.py (the names the adapter and fake use)."""
from .result import CompletionOutput, GenerationResult, IterationResult, Logprob
from .utils import RequestError

__all__ = ["RequestError", "CompletionOutput", "GenerationResult", "IterationResult", "Logprob"]
