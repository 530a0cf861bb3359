"""Function tools: validation of ``tools``/``tool_choice``/``max_tool_calls`` and their
translation to the inference service's ``Chat`` fields.

Protocol: OpenAI Responses function calling (docs/responses-api.md §1-§3).

* ``tools``: ``[{type: "function", name, description?, parameters?, strict?}]``. Names match
  ``^[a-zA-Z0-9_-]{1,64}$`` and are unique; ``parameters`` must be a valid JSON Schema
  (metaschema check). Other tool types (hosted tools) are 400 ``unsupported_parameter``
  naming ``tools[i].type``. The echo carries exactly ``type, name, description,
  parameters, strict`` (``null`` where not given).
* ``tool_choice``: ``"auto"`` | ``"none"`` | ``"required"`` | ``{type: "function", name}``
  (a Chat Completions ``{type: "function", function: {name}}`` is accepted too) |
  ``{type: "allowed_tools", mode: "auto"|"required", tools: [{type: "function", name}]}``.
  A choice that forces a call needs tools; a named function must be one of them.
* ``max_tool_calls`` (>= 1) and ``parallel_tool_calls``: the most calls a turn may make.
  With a forced call the service's grammar enforces it; otherwise the gateway drops the
  calls past the limit (:func:`call_limit`, applied in ``streaming.py``).

Translation (:func:`apply_to_chat`): ``tool_choice: "none"`` sends NO tools to the service,
so the model is not shown functions it may not call (and, with tool parsing off, would
otherwise print call markup as text); the history's calls and results still render.
``allowed_tools`` sends only the allowed subset. A forced choice (``required``, a named
function, ``allowed_tools`` with mode ``required``) is enforced by the service with
grammar-constrained decoding. ``parameters`` travel as UTF-8 JSON (``\\uXXXX`` escapes
would make non-ASCII text up to three times larger on the wire).
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .errors import ApiError, invalid, kind_of
from .schemas import check_schema

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MODES = ("auto", "none", "required")
_MODE_PB = {"auto": pb.ToolChoice.MODE_AUTO, "none": pb.ToolChoice.MODE_NONE,
            "required": pb.ToolChoice.MODE_REQUIRED}


def _name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise invalid(param, f"Invalid '{param}': expected a name of 1 to 64 letters, digits, '_' or '-'.")
    return value


def _optional(value: Any, kind: type, param: str, what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise invalid(param, f"Invalid type for '{param}': expected {what}.")
    return value


def _function_tool(tool: Any, path: str) -> dict:
    if not isinstance(tool, dict):
        raise invalid(path, f"Invalid '{path}': expected an object.")
    kind = tool.get("type")
    if kind != "function":
        raise ApiError("unsupported", f"Tool type {kind!r} is not supported; this server runs "
                       f"'function' tools only.", param=f"{path}.type")
    params = _optional(tool.get("parameters"), dict, f"{path}.parameters", "a JSON Schema object")
    if params is not None:
        check_schema(params, f"{path}.parameters")
    return {"type": "function", "name": _name(tool.get("name"), f"{path}.name"),
            "description": _optional(tool.get("description"), str, f"{path}.description", "a string"),
            "parameters": params,
            "strict": _optional(tool.get("strict"), bool, f"{path}.strict", "a boolean")}


def validate_tools(name: str, value: Any) -> list[dict]:
    """The ``tools`` array in its echo form; 400 naming the offending path."""
    if not isinstance(value, list):
        raise invalid(name, f"Invalid type for '{name}': expected an array of tools.")
    tools, seen = [], set()
    for i, tool in enumerate(value):
        spec = _function_tool(tool, f"{name}[{i}]")
        if spec["name"] in seen:
            raise invalid(f"{name}[{i}].name", f"Duplicate tool name {spec['name']!r}: tool names must be unique.")
        seen.add(spec["name"])
        tools.append(spec)
    return tools


def _named(value: dict, name: str) -> dict:
    inner = value.get("function") if isinstance(value.get("function"), dict) else value
    return {"type": "function", "name": _name(inner.get("name"), f"{name}.name")}


def _allowed(value: dict, name: str) -> dict:
    mode = value.get("mode")
    if mode not in ("auto", "required"):
        raise invalid(f"{name}.mode", f"Invalid '{name}.mode': expected 'auto' or 'required'.")
    entries = value.get("tools")
    if not isinstance(entries, list) or not entries:
        raise invalid(f"{name}.tools", f"Invalid '{name}.tools': expected a non-empty array of tools.")
    allowed = []
    for i, entry in enumerate(entries):
        path = f"{name}.tools[{i}]"
        if not isinstance(entry, dict) or entry.get("type") != "function":
            raise ApiError("unsupported", f"'{path}' must be a function tool reference "
                           "({type: 'function', name}).", param=path)
        allowed.append({"type": "function", "name": _name(entry.get("name"), f"{path}.name")})
    return {"type": "allowed_tools", "mode": mode, "tools": allowed}


CHOICE_OBJECTS: dict[str, Callable[[dict, str], dict]] = {"function": _named, "allowed_tools": _allowed}


def validate_tool_choice(name: str, value: Any) -> str | dict:
    if isinstance(value, str):
        if value not in MODES:
            raise invalid(name, f"Invalid '{name}': expected one of {', '.join(map(repr, MODES))} or a function.")
        return value
    if not isinstance(value, dict):
        raise invalid(name, f"Invalid type for '{name}': expected a string or an object.")
    build = CHOICE_OBJECTS.get(kind_of(value))
    if build is None:
        raise ApiError("unsupported", f"tool_choice type {value.get('type')!r} is not supported; expected "
                       "'function' or 'allowed_tools' (this server runs function tools only).", param=f"{name}.type")
    return build(value, name)


def check_choice(tools: list[dict], choice: str | dict) -> None:
    """Cross-field rules: a forcing choice needs tools; named functions must exist."""
    names = {t["name"] for t in tools}
    if forces_call(choice) and not tools:
        raise invalid("tool_choice", "tool_choice forces a tool call, but no tools were given.")
    wanted = [choice] if isinstance(choice, dict) and choice["type"] == "function" else \
        (choice["tools"] if isinstance(choice, dict) else [])
    for ref in wanted:
        if ref["name"] not in names:
            raise invalid("tool_choice", f"tool_choice names function {ref['name']!r}, which is not among the tools.")


def forces_call(choice: str | dict) -> bool:
    if isinstance(choice, dict):
        return choice["type"] == "function" or choice["mode"] == "required"
    return choice == "required"


def offered_tools(tools: list[dict], choice: str | dict) -> list[dict]:
    """The tools the model is shown this turn."""
    if choice == "none":
        return []
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        allowed = {ref["name"] for ref in choice["tools"]}
        return [t for t in tools if t["name"] in allowed]
    return tools


def apply_to_chat(chat: pb.Chat, tools: list[dict], choice: str | dict, parallel: bool,
                  max_tool_calls: int | None) -> None:
    """Sets the Chat's tools, tool_choice, parallel_tool_calls and max_tool_calls."""
    for tool in offered_tools(tools, choice):
        params = tool["parameters"]
        chat.tools.add(name=tool["name"], description=tool["description"] or "",
                       parameters_json=json.dumps(params, ensure_ascii=False) if params is not None else "",
                       strict=bool(tool["strict"]))
    if isinstance(choice, str):
        chat.tool_choice.mode = _MODE_PB[choice]
    elif choice["type"] == "function":
        chat.tool_choice.function_name = choice["name"]
    else:
        chat.tool_choice.mode = _MODE_PB[choice["mode"]]
    chat.parallel_tool_calls = parallel
    if max_tool_calls is not None:
        chat.max_tool_calls = max_tool_calls


def call_limit(choice: str | dict, parallel: bool, max_tool_calls: int | None) -> int | None:
    """Most function calls one turn may output (None: no limit)."""
    if choice == "none":
        return 0
    if not parallel or (isinstance(choice, dict) and choice["type"] == "function"):
        return 1 if max_tool_calls is None else min(1, max_tool_calls)
    return max_tool_calls


def call_rules(req: Any) -> dict:
    """``StreamState`` settings for a request (a ``CreateRequest``): the call limit and the
    names a call may have."""
    names = frozenset(t["name"] for t in offered_tools(req.tools, req.tool_choice))
    return {"max_calls": call_limit(req.tool_choice, req.parallel_tool_calls, req.max_tool_calls),
            "tool_names": names}
