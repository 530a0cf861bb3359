"""Validators of the create request's option objects.

Protocol: OpenAI Responses create fields (docs/responses-api.md §1; openai-python's
``ResponseCreateParams`` and OpenAI's OpenAPI ``CreateResponse``). Each value is type-checked
(a bad type or value is a 400 naming the exact path). ``context_management`` is honoured
(``compaction.on_threshold``); the others are then ignored, for the reason given with each
validator (docs/gateway.md "Request fields"). The few values whose meaning this
server cannot honour at all are refused with 400 ``unsupported_parameter`` instead of being
silently dropped: ``prompt_cache_options.prewarm: true`` (it asks for no output), a
``moderation`` policy in ``block`` mode (no moderation model runs here, so nothing could be
blocked) and the beta ``multi_agent.enabled: true`` (no sub-agents run here).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ApiError, invalid

#: OpenAI's minimum ``compact_threshold`` (OpenAPI ``ContextManagementParam``).
MIN_COMPACT_THRESHOLD = 1000


def _object(name: str, value: Any, fields: dict[str, Callable[[str, Any], Any]]) -> dict:
    """``value`` as an object whose known keys pass their checks; other keys are a 400."""
    if not isinstance(value, dict):
        raise invalid(name, f"Invalid type for '{name}': expected an object.")
    for key, item in value.items():
        check = fields.get(key)
        if check is None:
            raise ApiError("unknown_parameter", f"Unknown parameter: '{name}.{key}'.", param=f"{name}.{key}")
        if item is not None:
            check(f"{name}.{key}", item)
    return value


def _enum(*allowed: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in allowed:
            raise invalid(name, f"Invalid '{name}': expected one of {', '.join(map(repr, allowed))}.")
    return check


def _string(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise invalid(name, f"Invalid type for '{name}': expected a string.")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise invalid(name, f"Invalid type for '{name}': expected a boolean.")


def client_metadata(name: str, value: Any) -> dict[str, str]:
    """An object of strings that clients (Codex) attach for their own bookkeeping; OpenAI
    does not echo it, nor do we. Only its types are checked."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(name, f"Invalid type for '{name}': expected an object of string values.")
    return dict(value)


def _prewarm(name: str, value: Any) -> None:
    _boolean(name, value)
    if value:
        raise ApiError("unsupported", f"'{name}: true' (prepare the cache, generate nothing) is not supported; "
                       "the prefix cache fills as responses are generated.", param=name)


def prompt_cache_options(name: str, value: Any) -> None:
    """Ignored: the engine's prefix cache is automatic, with no breakpoints or lifetimes."""
    _object(name, value, {"ttl": _enum("30m", "12h"), "mode": _enum("implicit", "explicit"),
                          "prewarm": _prewarm, "comparison_response_id": _string})


def _threshold(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_COMPACT_THRESHOLD:
        raise invalid(name, f"Invalid '{name}': expected an integer >= {MIN_COMPACT_THRESHOLD}.")


def context_management(name: str, value: Any) -> list[dict]:
    """``[{type: "compaction", compact_threshold?}]``: compaction inside a create, over the
    threshold (``compaction.threshold``, docs/gateway.md "Compaction inside a create")."""
    if not isinstance(value, list) or not value:
        raise invalid(name, f"Invalid '{name}': expected a non-empty array of context management entries.")
    for i, entry in enumerate(value):
        path = f"{name}[{i}]"
        _object(path, entry, {"type": _enum("compaction"), "compact_threshold": _threshold})
        if entry.get("type") is None:
            raise invalid(f"{path}.type", f"Missing required parameter: '{path}.type'.")
    return [dict(entry) for entry in value]


def _policy_mode(name: str, value: Any) -> None:
    if not isinstance(value, dict) or value.get("mode") not in ("score", "block"):
        raise invalid(f"{name}.mode", f"Invalid '{name}.mode': expected 'score' or 'block'.")
    if value["mode"] == "block":
        raise ApiError("unsupported", f"'{name}.mode: block' is not supported: no moderation model runs on "
                       "this server, so nothing could be blocked.", param=f"{name}.mode")


def moderation(name: str, value: Any) -> None:
    """Accepted for ``score`` policies, which add nothing here (no moderation model)."""
    _object(name, value, {"model": _string, "policy": lambda n, v: _object(
        n, v, {"input": _policy_mode, "output": _policy_mode})})
    if not isinstance(value.get("model"), str):
        raise invalid(f"{name}.model", f"Missing required parameter: '{name}.model'.")


def image(name: str, value: Any) -> None:
    """Ignored: images reach the model as the service decodes them (no context compression)."""
    _object(name, value, {"context_compression": _enum("auto", "enabled", "disabled")})


def access_programs(name: str, value: Any) -> None:
    """Ignored: OpenAI's domain-specific access programs have no counterpart here."""
    _object(name, value, {"cyber": _enum("standard", "daybreak_blue", "daybreak_red")})


def background_options(name: str, value: Any) -> None:
    """Ignored: a background response starts as soon as a worker is free, within any window."""
    _object(name, value, {"completion_window": _enum("soonest", "2h", "8h"), "continuation_id": _string})


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(name, f"Invalid '{name}': expected an integer >= 1.")


def multi_agent(name: str, value: Any) -> None:
    """Beta (``openai-beta: responses_multi_agent=v1``; openai-python's
    ``beta.responses.create``): server-hosted sub-agents. Off is accepted and changes nothing;
    on is refused, since no agent runtime runs here and a single-agent answer is not what
    was asked for."""
    _object(name, value, {"enabled": _boolean, "max_concurrent_subagents": _positive_int})
    if value.get("enabled") is None:
        raise invalid(f"{name}.enabled", f"Missing required parameter: '{name}.enabled'.")
    if value["enabled"]:
        raise ApiError("unsupported", f"'{name}.enabled: true' (server-hosted multi-agent execution) is not "
                       "supported by this server; run the agents on the client, as the Agents SDK does.",
                       param=f"{name}.enabled")


def stream_options(name: str, value: Any) -> None:
    """Ignored: events never carry an ``obfuscation`` field (nothing to switch off)."""
    _object(name, value, {"include_obfuscation": _boolean})


def prompt_cache_retention(name: str, value: Any) -> None:
    """Ignored: the prefix cache keeps what fits."""
    _enum("in_memory", "24h")(name, value)
