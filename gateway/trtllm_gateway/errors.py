"""The gateway's one error table and the one middleware that applies it.

Protocol (OpenAI Responses API, docs/responses-api.md §4): every HTTP error is
``{"error": {"message", "type", "param", "code"}}`` with the status from the table.

* Handlers raise :class:`ApiError` with a kind from :data:`KINDS` (status, type, code).
* Other exceptions are mapped by class through :data:`EXCEPTION_KINDS` (MRO walk).
* gRPC failures of the inference service map by status code through :data:`GRPC_KINDS`;
  the service puts OpenAI's ``param``/``code`` in the trailing metadata keys
  ``x-error-param``/``x-error-code`` (see ``services/trtllm_service/errors.py``).
  RESOURCE_EXHAUSTED is a full queue (429 + ``Retry-After``) unless gRPC core raised it for a
  message over a size limit, which no retry fixes: 400 ``request_too_large`` naming the size.
* aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) are wrapped
  in the same envelope.
* A client that leaves while its body is read (``ConnectionResetError`` with the transport
  gone) gets nothing (counted as 499) and no log line: it is not the server's error.
* Anything else is a 500 ``server_error`` whose message never contains a traceback (the
  traceback goes to the log).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .store import HistoryTooDeep, InvalidPageRequest, StoreError

log = logging.getLogger("trtllm_gateway.errors")

PARAM_KEY = "x-error-param"  # trailing-metadata keys set by the inference service
CODE_KEY = "x-error-code"
RETRY_AFTER_S = "1"  # Retry-After on 429: the service's queue drains within about a second


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    code: str | None = None


KINDS: dict[str, ErrorKind] = {
    "invalid_request": ErrorKind(400, "invalid_request_error"),
    "invalid_json": ErrorKind(400, "invalid_request_error"),
    "unreadable_body": ErrorKind(400, "invalid_request_error"),
    "context_length_exceeded": ErrorKind(400, "invalid_request_error", "context_length_exceeded"),
    "unsupported": ErrorKind(400, "invalid_request_error", "unsupported_parameter"),
    "unknown_parameter": ErrorKind(400, "invalid_request_error", "unknown_parameter"),
    "authentication": ErrorKind(401, "authentication_error", "invalid_api_key"),
    "not_found": ErrorKind(404, "invalid_request_error"),
    "model_not_found": ErrorKind(404, "invalid_request_error", "model_not_found"),
    "previous_response_not_found": ErrorKind(404, "invalid_request_error", "previous_response_not_found"),
    "method_not_allowed": ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    "request_timeout": ErrorKind(408, "invalid_request_error", "request_timeout"),
    "conflict": ErrorKind(409, "invalid_request_error", "conflict"),
    "body_too_large": ErrorKind(413, "invalid_request_error", "request_too_large"),
    "message_too_large": ErrorKind(400, "invalid_request_error", "request_too_large"),
    "rate_limited": ErrorKind(429, "rate_limit_error", "rate_limit_exceeded"),
    "server_error": ErrorKind(500, "server_error", "server_error"),
    "not_implemented": ErrorKind(501, "server_error", "not_implemented"),
    "service_unavailable": ErrorKind(503, "server_error", "service_unavailable"),
    "timeout": ErrorKind(504, "server_error", "timeout"),
}


class ApiError(Exception):
    """An error with a known HTTP shape. ``kind`` is a key of :data:`KINDS`."""

    def __init__(self, kind: str, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.kind = KINDS[kind]
        self.message = message
        self.param = param
        self.code = code if code is not None else self.kind.code
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.kind.status

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind.type,
                          "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str) -> ApiError:
    """A 400 ``invalid_request_error`` about ``param``: what every request validator raises."""
    return ApiError("invalid_request", message, param=param)


# Exception class -> (kind, param). Most specific first is not needed: lookup walks the MRO.
EXCEPTION_KINDS: dict[type[BaseException], tuple[str, str | None]] = {
    json.JSONDecodeError: ("invalid_json", None),
    UnicodeDecodeError: ("invalid_json", None),
    RequestPayloadError: ("unreadable_body", None),  # aiohttp: bad chunked framing or Content-Encoding
    HttpProcessingError: ("unreadable_body", None),
    HistoryTooDeep: ("invalid_request", "previous_response_id"),
    InvalidPageRequest: ("invalid_request", None),
    StoreError: ("server_error", None),
    asyncio.TimeoutError: ("timeout", None),
}

# gRPC status of the inference service -> kind.
GRPC_KINDS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.OUT_OF_RANGE: "invalid_request",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_request",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.UNAVAILABLE: "service_unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.UNIMPLEMENTED: "not_implemented",
    grpc.StatusCode.UNAUTHENTICATED: "server_error",
    grpc.StatusCode.PERMISSION_DENIED: "server_error",
}

# aiohttp HTTP exception status -> kind (unknown route, wrong method, body too large).
HTTP_KINDS: dict[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

# The service names request fields as the proto does; clients know the Responses names.
SERVICE_PARAMS: dict[str, str] = {
    "max_tokens": "max_output_tokens",
    "top_logprobs": "top_logprobs",
    "prompt": "input",
    "chat": "input",
    "messages": "input",
    "response_format": "text.format",
    "response_format.json_schema": "text.format.schema",
}

# Client-facing messages for codes where the service's own text is not meant for clients.
_GRPC_MESSAGES: dict[str, str] = {
    "rate_limited": "The inference service is at capacity; retry shortly.",
    "service_unavailable": "The inference service is unavailable.",
    "timeout": "The inference service did not answer in time.",
    "server_error": "The inference service failed while serving the request.",
    "not_implemented": "The inference service does not implement this call.",
}


# gRPC core's own RESOURCE_EXHAUSTED when a message is over a channel's or server's
# max_{send,receive}_message_length: "Sent message larger than max (N vs. M)" on the
# gateway's side, "Received message larger than max (N vs. M)" from the service. Unlike the
# service's full queue (the same code, from its error table), it is permanent: a 400.
_MESSAGE_SIZE = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


def _message_too_large(exc: grpc.aio.AioRpcError) -> ApiError | None:
    match = _MESSAGE_SIZE.search(exc.details() or "")
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or match is None:
        return None
    size, limit = int(match.group(2)), int(match.group(3))
    side = "this gateway's" if match.group(1) == "Sent" else "the inference service's"
    return ApiError("message_too_large", f"The request is too large for the inference service: it encodes to "
                    f"{size} bytes, over {side} limit of {limit} bytes (--max-message-bytes). Send less input "
                    "or smaller tools and schemas.")


def from_grpc(exc: grpc.aio.AioRpcError) -> ApiError:
    """An ApiError for a failed service call, keeping the service's param/code trailers."""
    too_large = _message_too_large(exc)
    if too_large is not None:
        return too_large
    kind = GRPC_KINDS.get(exc.code(), "server_error")
    trailers = _trailers(exc)
    if kind == "invalid_request":
        code = trailers.get(CODE_KEY)
        kind = "context_length_exceeded" if code == "context_length_exceeded" else kind
        param = trailers.get(PARAM_KEY)
        if param is not None:
            param = SERVICE_PARAMS.get(param, param)
        return ApiError(kind, exc.details() or "invalid request", param=param, code=code)
    headers = {"Retry-After": RETRY_AFTER_S} if kind == "rate_limited" else None
    if kind == "server_error":
        log.error("service call failed: %s %s", exc.code(), exc.details())
    return ApiError(kind, _GRPC_MESSAGES.get(kind, exc.details() or "service error"), headers=headers)


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in exc.trailing_metadata() or ():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[key] = value
    return out


def from_http(exc: web.HTTPException) -> ApiError:
    kind = HTTP_KINDS.get(exc.status)
    if kind is None:
        kind = "invalid_request" if exc.status < 500 else "server_error"
    if kind == "not_found":
        return ApiError(kind, "Unknown request URL. Check the path and method.")
    if kind == "method_not_allowed":
        return ApiError(kind, "Method not allowed for this URL.")
    if kind == "body_too_large":
        return ApiError(kind, "The request body is too large.")
    return ApiError(kind, exc.reason or "request failed")


def to_api_error(exc: BaseException) -> ApiError:
    """The ApiError for any exception (the table's single entry point)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        return from_grpc(exc)
    if isinstance(exc, web.HTTPException):
        return from_http(exc)
    for cls in type(exc).__mro__:
        entry = EXCEPTION_KINDS.get(cls)
        if entry is not None:
            kind, param = entry
            return ApiError(kind, _message(kind, exc), param=getattr(exc, "param", None) or param)
    log.error("unhandled error", exc_info=exc)
    return ApiError("server_error", "The server had an error while processing your request.")


def _message(kind: str, exc: BaseException) -> str:
    if kind == "invalid_json":
        return "We could not parse the JSON body of your request: it must be a valid UTF-8 JSON object."
    if kind == "unreadable_body":  # aiohttp's own text may quote the client's bytes
        return "The request body could not be read: its framing or Content-Encoding is not valid."
    if kind == "server_error":
        log.error("store error", exc_info=exc)
        return "The server had an error while processing your request."
    if kind == "timeout":
        return "The request timed out."
    return str(exc) or kind


def error_response(err: ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turns every exception into the envelope. Streams already started handle their own."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http(exc))
    except Exception as exc:  # noqa: BLE001 - the table decides; unknown ones are logged
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # aiohttp's "Connection lost" mid-upload: nobody to answer
            return web.Response(status=499)  # nginx's "client closed request", for the metrics
        return error_response(to_api_error(exc))


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def kind_of(obj: dict) -> str | None:
    """An object's "type" when it is a string, else None: a client's `{"type": []}` must look
    up as unknown (a 400) rather than crash the registry lookup (unhashable)."""
    kind = obj.get("type")
    return kind if isinstance(kind, str) else None
