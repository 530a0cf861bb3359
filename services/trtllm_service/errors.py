"""The service's one error table: exception class -> gRPC status code.

Handlers raise; `ErrorInterceptor` (server.py) applies this table, so every RPC fails the
same way: a status code from the table and the exception's message, never a traceback.
Unknown exceptions become INTERNAL with a generic message (the traceback goes to the log).
"""
from __future__ import annotations

import grpc

from .engine.base import EngineError, EngineOverloaded, EngineRejected


class InvalidRequest(ValueError):
    """The request cannot be served as sent. `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested output does not fit the model's context."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, code="context_length_exceeded")


class QueueFull(Exception):
    """Admission queue is full; the client should retry later."""


class NotServing(Exception):
    """The engine is starting, or the server is draining."""


# Most specific classes first: lookup walks the exception's MRO.
ERROR_TABLE: dict[type[BaseException], grpc.StatusCode] = {
    ContextLengthExceeded: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    EngineRejected: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    EngineOverloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotServing: grpc.StatusCode.UNAVAILABLE,
    EngineError: grpc.StatusCode.INTERNAL,
}


# Trailing-metadata keys that carry the machine-readable parts of an error, so callers
# (the gateway) can fill OpenAI's `param` and `code` without parsing messages.
PARAM_KEY = "x-error-param"
CODE_KEY = "x-error-code"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, client-facing message and trailing metadata for an exception."""
    for cls in type(exc).__mro__:
        code = ERROR_TABLE.get(cls)
        if code is not None:
            trailers: list[tuple[str, str]] = []
            param, error_code = getattr(exc, "param", None), getattr(exc, "code", None)
            if param:
                trailers.append((PARAM_KEY, param))
            if error_code:
                trailers.append((CODE_KEY, error_code))
            return code, str(exc) or cls.__name__, tuple(trailers)
    return grpc.StatusCode.INTERNAL, "internal error while serving the request", ()
