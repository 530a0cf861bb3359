"""Mirrors tensorrt_llm/executor/utils.py: RequestError."""


class RequestError(RuntimeError):
    """The error raised when the request is failed."""
