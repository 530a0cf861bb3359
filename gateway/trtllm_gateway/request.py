"""Parsing and validation of ``POST /v1/responses`` (and ``/input_tokens``) bodies.

Protocol: the OpenAI Responses create request (docs/responses-api.md §1). Policy, table-driven:

* a top-level field not in :data:`FIELDS` -> 400 ``unknown_parameter`` naming it;
* a known field we do not serve (:data:`UNSUPPORTED`: ``prompt``, stored prompt templates)
  -> 400 ``unsupported_parameter`` naming it;
* every other field is type- and range-checked by its validator in :data:`FIELDS`;
  ``null`` always means "use the default". The agentic fields (``tools``, ``tool_choice``,
  ``max_tool_calls``, ``reasoning``, ``text``) are validated in ``tools.py`` and
  ``output_format.py``; the option objects (``client_metadata``, ``prompt_cache_options``,
  ``context_management``, ``moderation``, ``stream_options``...) in ``request_options.py``.
  docs/gateway.md "Request fields" says what is done with each.

Defaults the gateway's settings may change: ``temperature`` (``--default-temperature``,
OpenAI's 1.0) and ``max_output_tokens`` (``--default-max-output-tokens``, none); the
response echoes the values used.

Ranges: temperature 0..2, top_p 0..1, top_logprobs 0..20, presence/frequency penalty -2..2,
``max_output_tokens`` >= 16 (OpenAI's own minimum), ``truncation`` auto|disabled,
``metadata`` <= 16 string pairs, keys <= 64 chars, values <= 512 chars.
No pydantic: a plain dict walk is cheaper on the hot path. Counts and sizes (items, parts,
tools, schema bytes) are bounded first (``limits.py``); routes read bodies with
:func:`read_create` / :func:`read_json`, which parse large ones in a worker thread.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import hosted_tools, reasoning_crypto
from . import request_options as options
from .context import GATEWAY
from .errors import ApiError, invalid
from .input_items import Normalized, normalize_input
from .limits import DEFAULT_LIMITS, Limits, check_tools_and_schemas, off_loop
from .output_format import PLAIN_TEXT, validate_reasoning, validate_text
from .tools import check_choice, validate_tool_choice, validate_tools

MIN_OUTPUT_TOKENS = 16
#: Token counts travel as int32 in the inference proto.
MAX_INT32 = 2**31 - 1
#: What a response id looks like (`ids.new_id("resp")`); anything else cannot name a stored one.
_RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}")
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
LOGPROBS_INCLUDE = "message.output_text.logprobs"
#: The ``include`` values served: per-token logprobs, and reasoning items' ``encrypted_content``
#: (``reasoning_crypto.py``). The others name hosted tools' outputs: 400 ``unsupported_parameter``.
INCLUDES = (LOGPROBS_INCLUDE, reasoning_crypto.INCLUDE)


@dataclass
class CreateRequest:
    """A validated create request; field names and defaults follow the API."""

    model: str
    input: Normalized
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    max_output_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    truncation: str = "disabled"
    metadata: dict[str, str] = field(default_factory=dict)
    parallel_tool_calls: bool = True
    tool_choice: str | dict = "auto"
    tools: list[dict] = field(default_factory=list)
    max_tool_calls: int | None = None
    reasoning: dict | None = None
    text: dict = field(default_factory=lambda: {**PLAIN_TEXT, "format": dict(PLAIN_TEXT["format"])})
    include: list[str] = field(default_factory=list)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str = "default"
    conversation: str | None = None  # conversation id (conversations.py)
    client_metadata: dict[str, str] = field(default_factory=dict)  # validated, never echoed
    context_management: list[dict] = field(default_factory=list)

    @property
    def logprobs(self) -> bool:
        """Per-token logprobs are returned when ``include`` asks for them or when
        ``top_logprobs`` asks for alternatives (which come with the token's own logprob)."""
        return LOGPROBS_INCLUDE in self.include or bool(self.top_logprobs)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(name, f"Invalid type for '{name}': expected a string.")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, f"Invalid type for '{name}': expected a boolean.")
    return value


def _number(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(name, f"Invalid type for '{name}': expected a number.")
        if isinstance(value, int) and not lo <= value <= hi:  # may be too large for a float
            raise invalid(name, f"Invalid '{name}': the value is out of range; expected a value in [{lo}, {hi}].")
        if not math.isfinite(value):
            raise invalid(name, f"Invalid type for '{name}': expected a number.")
        if not lo <= value <= hi:
            raise invalid(name, f"Invalid '{name}': {value} is out of range; expected a value in [{lo}, {hi}].")
        return float(value)
    return check


def _integer(lo: int, hi: int | None = None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(name, f"Invalid type for '{name}': expected an integer.")
        if value < lo or (hi is not None and value > hi):
            top = "" if hi is None else f" and <= {hi}"
            raise invalid(name, f"Invalid '{name}': {value}; expected a value >= {lo}{top}.")
        return value
    return check


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise invalid(name, f"Invalid '{name}': expected one of {', '.join(map(repr, allowed))}.")
        return value
    return check


def _metadata(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid(name, "Invalid type for 'metadata': expected an object of string pairs.")
    if len(value) > METADATA_MAX_PAIRS:
        raise invalid(name, f"Invalid 'metadata': at most {METADATA_MAX_PAIRS} pairs are allowed.")
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY:
            raise invalid(name, f"Invalid 'metadata': key {key[:16]!r}... is longer than "
                          f"{METADATA_MAX_KEY} characters.")
        if not isinstance(item, str):
            raise invalid(name, f"Invalid 'metadata': the value of {key!r} must be a string.")
        if len(item) > METADATA_MAX_VALUE:
            raise invalid(name, f"Invalid 'metadata': the value of {key!r} is longer than "
                          f"{METADATA_MAX_VALUE} characters.")
    return dict(value)


def _include(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(name, "Invalid type for 'include': expected an array of strings.")
    for entry in value:
        if entry not in INCLUDES:
            raise ApiError("unsupported", f"include value {entry!r} is not supported; this server serves "
                           f"{', '.join(map(repr, INCLUDES))}.", param=name)
    return list(value)


SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")


def _service_tier(name: str, value: Any) -> str:
    _choice(*SERVICE_TIERS)(name, value)
    return "default"  # one tier here; the response reports the tier actually used


def _response_id(name: str, value: Any) -> str:
    """A response id as this gateway issues them (ids.py: a prefix, '_', then letters and digits)."""
    if not isinstance(value, str):
        raise invalid(name, f"Invalid type for '{name}': expected a string.")
    if not _RESPONSE_ID.fullmatch(value):
        raise invalid(name, f"Invalid '{name}': {value[:64]!r} is not a response id (expected 'resp_...').")
    return value


def _conversation(name: str, value: Any) -> str:
    """A conversation id, given as a string or as ``{"id": ...}``."""
    if isinstance(value, dict) and set(value) == {"id"}:
        value = value["id"]
    if not isinstance(value, str) or not value:
        raise invalid(name, "Invalid 'conversation': expected a conversation id or an object {\"id\": ...}.")
    return value


# field -> validator(name, value) -> cleaned value. `input` is handled separately.
FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "model": _string,
    "instructions": _string,
    "previous_response_id": _response_id,
    "store": _boolean,
    "stream": _boolean,
    "background": _boolean,
    "max_output_tokens": _integer(MIN_OUTPUT_TOKENS, MAX_INT32),
    "temperature": _number(0.0, 2.0),
    "top_p": _number(0.0, 1.0),
    "top_logprobs": _integer(0, 20),
    "presence_penalty": _number(-2.0, 2.0),
    "frequency_penalty": _number(-2.0, 2.0),
    "truncation": _choice("auto", "disabled"),
    "metadata": _metadata,
    "parallel_tool_calls": _boolean,
    "tool_choice": validate_tool_choice,
    "tools": validate_tools,  # with the --hosted-tools policy: see parse_create
    "max_tool_calls": _integer(1, MAX_INT32),
    "reasoning": validate_reasoning,
    "text": validate_text,
    "include": _include,
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,
    "service_tier": _service_tier,
    "conversation": _conversation,
    "client_metadata": options.client_metadata,
    "context_management": options.context_management,
    "stream_options": options.stream_options,
    "prompt_cache_retention": options.prompt_cache_retention,
    "prompt_cache_options": options.prompt_cache_options,
    "moderation": options.moderation,
    "image": options.image,
    "access_programs": options.access_programs,
    "background_options": options.background_options,
    "multi_agent": options.multi_agent,
}


# Known fields this server does not serve: field -> "is this value the harmless default?".
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "prompt": lambda v: False,  # a stored prompt template: this server stores none
}


#: A UTF-16 surrogate, as a JSON escape or as raw (CESU-style) UTF-8 bytes ED A0..BF xx: only
#: a well-formed pair of escapes is a character; json.loads lets lone ones through.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
#: Deepest JSON nesting accepted (objects and arrays). Real requests stay far below; deeper
#: ones would exhaust the stack of the parser or of jsonschema.
MAX_DEPTH = 64


def parse_json_object(raw: bytes) -> dict:
    """The body as a JSON object, or ApiError("invalid_json") -> 400.

    Refused: what json.loads cannot parse (including integers of more than 4,300 digits and
    nesting deep enough to exhaust its recursion), nesting deeper than MAX_DEPTH, and lone
    UTF-16 surrogates ("\\ud800" escapes or ED A0 80 bytes), which parse but are no Unicode
    text: nothing downstream (the tokenizer, the store, a JSON reply in UTF-8) could carry them."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = "it is nested too deeply" if isinstance(exc, RecursionError) else _json_problem(exc)
        raise ApiError("invalid_json", f"The request body is not valid JSON: {detail}.") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "The request body must be a JSON object.")
    if _depth_over(body, MAX_DEPTH):
        raise ApiError("invalid_json", f"The request body is nested more than {MAX_DEPTH} levels deep.")
    if _SURROGATE.search(raw) and not _valid_unicode(body):
        raise ApiError("invalid_json", "The request body contains a lone UTF-16 surrogate (such as "
                       "\"\\ud800\"); strings must be valid Unicode.")
    return body


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8"
    return "a number in it is too long"  # int() refuses literals of more than 4,300 digits


def _depth_over(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _valid_unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_unicode(k) and _valid_unicode(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_unicode(v) for v in value)
    return True


def _check_fields(body: dict, hosted_tools: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name == "input":
            continue
        if name == "tools" and value is not None:
            values[name] = validate_tools(name, value, hosted_tools)
            continue
        if name in UNSUPPORTED:
            if value is not None and not UNSUPPORTED[name](value):
                raise ApiError("unsupported", f"'{name}' is not supported by this server yet.", param=name)
            continue
        check = FIELDS.get(name)
        if check is None:
            raise ApiError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
        if value is not None:
            cleaned = check(name, value)
            if cleaned is not None:
                values[name] = cleaned
    return values


def parse_create(body: dict, *, for_count: bool = False, limits: Limits = DEFAULT_LIMITS) -> CreateRequest:
    """Validate a create request body (already a dict) into a :class:`CreateRequest`.

    ``for_count``: the ``/v1/responses/input_tokens`` variant, where ``model`` and
    ``input`` are optional (the history of ``previous_response_id`` may be all there is).
    ``limits``: the size limits (``limits.py``; the app passes its settings).
    """
    check_tools_and_schemas(body, limits)
    values = _check_fields(body, limits.hosted_tools)
    if not for_count and "model" not in values:
        raise invalid("model", "Missing required parameter: 'model'.")
    if body.get("input") is None:
        if not for_count:
            raise invalid("input", "Missing required parameter: 'input'.")
        body = {**body, "input": []}
    values["input"] = normalize_input(body["input"], limits, references=True)
    values.setdefault("temperature", limits.default_temperature)  # the echo says what was used
    if limits.default_max_output_tokens and not for_count:
        values.setdefault("max_output_tokens", limits.default_max_output_tokens)
    check_choice(values.get("tools", []), values.get("tool_choice", "auto"))
    values.setdefault("model", "")
    return CreateRequest(**values)


async def read_json(request: web.Request) -> dict:
    """The request's body as a JSON object (parsed off the loop when large)."""
    raw = await request.read()
    return await off_loop(raw, lambda: parse_json_object(raw))


async def read_create(request: web.Request, limits: Limits, *, for_count: bool = False) -> tuple[dict, CreateRequest]:
    """(body, validated request) of a create, parsed and validated off the loop when large."""
    raw = await request.read()

    def work() -> tuple[dict, CreateRequest]:
        body = parse_json_object(raw)
        return body, parse_create(body, for_count=for_count, limits=limits)
    body, req = await off_loop(raw, work)
    if not for_count:
        hosted_tools.record(request.app[GATEWAY].metrics, req.tools)
    return body, req
