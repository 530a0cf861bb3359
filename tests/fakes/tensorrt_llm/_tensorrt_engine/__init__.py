"""Mirrors tensorrt_llm/_tensorrt_engine/__init__.py: the TensorRT-backend LLM class, used
for prebuilt engine directories."""
from ..llmapi.llm import _TrtLLM as LLM

__all__ = ["LLM"]
