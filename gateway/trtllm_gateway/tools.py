"""Tools: validation of ``tools``/``tool_choice``/``max_tool_calls`` and their translation to
the inference service's ``Chat`` fields.

Protocol: OpenAI Responses tools (docs/responses-api.md §1-§3, "Tools").

* ``tools`` entries, by ``type``:

  - ``function``: ``{name, description?, parameters?, strict?}``; names match
    ``^[a-zA-Z0-9_-]{1,64}$`` and are unique; ``parameters`` must be a valid JSON Schema
    (metaschema check). Echo: exactly ``type, name, description, parameters, strict``.
  - ``custom``: ``{name, description?, format?}`` (``custom_tools.py``).
  - ``namespace``: ``{name, description, tools: [function | custom]}``: its tools are
    offered to the model under the qualified name ``<namespace>.<name>`` (a ``.`` cannot
    occur in a tool name, so it never clashes with a top-level tool), and their calls come
    back with ``name`` and ``namespace`` split again. Echo: the namespace with its tools.
  - hosted tools (``hosted_tools.py``): not offered; dropped (echoed) or refused by the
    ``--hosted-tools`` policy.

* ``tool_choice``: ``"auto"`` | ``"none"`` | ``"required"`` | ``{type: "function", name}``
  (a Chat Completions ``{type: "function", function: {name}}`` too; ``name`` may be
  qualified, or ``namespace`` given beside it) | ``{type: "custom", name}`` |
  ``{type: "allowed_tools", mode: "auto"|"required", tools: [{type: "function"|"custom",
  name} | {type: "namespace", name}]}``. A choice that forces a call needs an offered tool;
  a named tool must be offered with that type; naming a hosted tool is a 400.
* ``max_tool_calls`` (>= 1) and ``parallel_tool_calls``: the most calls a turn may make.
  With a forced call the service's grammar enforces it; otherwise the gateway drops the
  calls past the limit (:func:`call_limit`, applied in ``streaming.py``).

Translation (:func:`apply_to_chat`): ``tool_choice: "none"`` sends NO tools to the service,
so the model is not shown tools it may not call (and, with tool parsing off, would
otherwise print call markup as text); the history's calls and results still render.
``allowed_tools`` sends only the allowed subset. A forced choice (``required``, a named
tool, ``allowed_tools`` with mode ``required``) is enforced by the service with
grammar-constrained decoding. ``parameters`` travel as UTF-8 JSON (``\\uXXXX`` escapes
would make non-ASCII text up to three times larger on the wire).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from trtllm_responses.inference.v1 import inference_pb2 as pb

from . import custom_tools, hosted_tools
from .errors import ApiError, invalid, kind_of
from .schemas import check_schema

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MODES = ("auto", "none", "required")
CALLABLE = ("function", "custom")
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


def _function_tool(tool: dict, path: str) -> dict:
    params = _optional(tool.get("parameters"), dict, f"{path}.parameters", "a JSON Schema object")
    if params is not None:
        check_schema(params, f"{path}.parameters")
    return {"type": "function", "name": _name(tool.get("name"), f"{path}.name"),
            "description": _optional(tool.get("description"), str, f"{path}.description", "a string"),
            "parameters": params,
            "strict": _optional(tool.get("strict"), bool, f"{path}.strict", "a boolean")}


def _custom_tool(tool: dict, path: str) -> dict:
    return {"type": "custom", "name": _name(tool.get("name"), f"{path}.name"),
            "description": _optional(tool.get("description"), str, f"{path}.description", "a string"),
            "format": custom_tools.validate_format(tool.get("format"), f"{path}.format")}


MEMBERS: dict[str, Callable[[dict, str], dict]] = {"function": _function_tool, "custom": _custom_tool}


def _namespace_tool(tool: dict, path: str) -> dict:
    members = tool.get("tools")
    if not isinstance(members, list) or not members:
        raise invalid(f"{path}.tools", f"Invalid '{path}.tools': expected a non-empty array of tools.")
    return {"type": "namespace", "name": _name(tool.get("name"), f"{path}.name"),
            "description": _optional(tool.get("description"), str, f"{path}.description", "a string"),
            "tools": _unique([_member(m, f"{path}.tools[{j}]", MEMBERS) for j, m in enumerate(members)],
                             f"{path}.tools")}


TOOL_TYPES: dict[str, Callable[[dict, str], dict]] = {**MEMBERS, "namespace": _namespace_tool}


def _member(tool: Any, path: str, table: dict[str, Callable[[dict, str], dict]]) -> dict:
    if not isinstance(tool, dict):
        raise invalid(path, f"Invalid '{path}': expected an object.")
    build = table.get(kind_of(tool) or "")
    if build is None:
        raise ApiError("unsupported", f"Tool type {tool.get('type')!r} is not supported here; expected one "
                       f"of {', '.join(table)}.", param=f"{path}.type")
    return build(tool, path)


def _unique(tools: list[dict], path: str) -> list[dict]:
    seen: set[tuple[bool, str]] = set()
    for i, tool in enumerate(tools):
        key = (tool["type"] == "namespace", tool.get("name", ""))
        if tool["type"] in TOOL_TYPES and key in seen:
            raise invalid(f"{path}[{i}].name", f"Duplicate tool name {key[1]!r}: tool names must be unique.")
        seen.add(key)
    return tools


def validate_tools(name: str, value: Any, hosted: str = "drop") -> list[dict]:
    """The ``tools`` array in its echo form; 400 naming the offending path. ``hosted``: the
    ``--hosted-tools`` policy (hosted tools stay in the echo, never offered)."""
    if not isinstance(value, list):
        raise invalid(name, f"Invalid type for '{name}': expected an array of tools.")
    tools = []
    for i, tool in enumerate(value):
        path = f"{name}[{i}]"
        if isinstance(tool, dict) and hosted_tools.is_hosted(tool):
            tools.append(hosted_tools.check(tool, path, hosted))
        else:
            tools.append(_member(tool, path, TOOL_TYPES))
    return _unique(tools, name)


def offered(tools: list[dict]) -> list[dict]:
    """Every tool the model can be offered, namespaces flattened, in order: ``{**tool, name:
    qualified name, base, namespace, path}`` (``path``: where it is in the request)."""
    flat = []
    for i, tool in enumerate(tools):
        if tool["type"] == "namespace":
            for j, member in enumerate(tool["tools"]):
                flat.append({**member, "name": f"{tool['name']}.{member['name']}", "base": member["name"],
                             "namespace": tool["name"], "path": f"tools[{i}].tools[{j}]"})
        elif tool["type"] in CALLABLE:
            flat.append({**tool, "base": tool["name"], "namespace": None, "path": f"tools[{i}]"})
    return flat


def _named(value: dict, name: str) -> dict:
    function = value.get("function")
    inner: dict = function if isinstance(function, dict) else value
    base = inner.get("name")
    namespace = inner.get("namespace")
    if namespace is not None:
        base = f"{_name(namespace, f'{name}.namespace')}.{_name(base, f'{name}.name')}"
    elif not isinstance(base, str) or not all(NAME_RE.match(p) for p in base.split(".", 1)):
        _name(base, f"{name}.name")
    return {"type": value["type"], "name": base}


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
        hosted_tools.check_choice(entry, path)
        if not isinstance(entry, dict) or entry.get("type") not in (*CALLABLE, "namespace"):
            raise ApiError("unsupported", f"'{path}' must be a tool reference ({{type: 'function' | 'custom' | "
                           "'namespace', name}).", param=path)
        allowed.append(_named(entry, path))
    return {"type": "allowed_tools", "mode": mode, "tools": allowed}


CHOICE_OBJECTS: dict[str, Callable[[dict, str], dict]] = {
    "function": _named, "custom": _named, "allowed_tools": _allowed}


def validate_tool_choice(name: str, value: Any) -> str | dict:
    if isinstance(value, str):
        if value not in MODES:
            raise invalid(name, f"Invalid '{name}': expected one of {', '.join(map(repr, MODES))} or a tool.")
        return value
    if not isinstance(value, dict):
        raise invalid(name, f"Invalid type for '{name}': expected a string or an object.")
    hosted_tools.check_choice(value, name)
    build = CHOICE_OBJECTS.get(kind_of(value) or "")
    if build is None:
        raise ApiError("unsupported", f"tool_choice type {value.get('type')!r} is not supported; expected "
                       "'function', 'custom' or 'allowed_tools'.", param=f"{name}.type")
    return build(value, name)


def _refs(choice: str | dict) -> list[dict]:
    if not isinstance(choice, dict):
        return []
    return choice["tools"] if choice["type"] == "allowed_tools" else [choice]


def _matches(ref: dict, tool: dict) -> bool:
    if ref["type"] == "namespace":
        return tool["namespace"] == ref["name"]
    return ref["type"] == tool["type"] and ref["name"] == tool["name"]


def check_choice(tools: list[dict], choice: str | dict) -> None:
    """Cross-field rules: a forcing choice needs offered tools; named tools must be offered
    with the named type."""
    flat = offered(tools)
    if forces_call(choice) and not flat:
        raise invalid("tool_choice", "tool_choice forces a tool call, but no tools were given (hosted tools "
                      "are not offered to the model)." if tools else "tool_choice forces a tool call, but no "
                      "tools were given.")
    for ref in _refs(choice):
        if not any(_matches(ref, tool) for tool in flat):
            raise invalid("tool_choice", f"tool_choice names {ref['type']} {ref['name']!r}, which is not among "
                          "the tools.")


def forces_call(choice: str | dict) -> bool:
    if isinstance(choice, dict):
        return choice["type"] in CALLABLE or choice["mode"] == "required"
    return choice == "required"


def offered_tools(tools: list[dict], choice: str | dict) -> list[dict]:
    """The tools the model is shown this turn (flattened, see :func:`offered`)."""
    if choice == "none":
        return []
    flat = offered(tools)
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        return [t for t in flat if any(_matches(ref, t) for ref in choice["tools"])]
    return flat


def _proto_tool(tool: dict) -> pb.Tool:
    if tool["type"] == "custom":
        return pb.Tool(name=tool["name"], description=custom_tools.model_description(tool), strict=True,
                       parameters_json=json.dumps(custom_tools.INPUT_SCHEMA),
                       custom=custom_tools.proto_format(tool, tool["path"]))
    params = tool["parameters"]
    return pb.Tool(name=tool["name"], description=tool["description"] or "", strict=bool(tool["strict"]),
                   parameters_json=json.dumps(params, ensure_ascii=False) if params is not None else "")


def apply_to_chat(chat: pb.Chat, tools: list[dict], choice: str | dict, parallel: bool,
                  max_tool_calls: int | None) -> None:
    """Sets the Chat's tools, tool_choice, parallel_tool_calls and max_tool_calls."""
    shown = offered_tools(tools, choice)
    chat.tools.extend(_proto_tool(tool) for tool in shown)
    if isinstance(choice, str):
        chat.tool_choice.mode = _MODE_PB[choice]
    elif choice["type"] in CALLABLE:
        chat.tool_choice.function_name = next(t["name"] for t in shown if _matches(choice, t))
    else:
        chat.tool_choice.mode = _MODE_PB[choice["mode"]]
    chat.parallel_tool_calls = parallel
    if max_tool_calls is not None:
        chat.max_tool_calls = max_tool_calls


def call_limit(choice: str | dict, parallel: bool, max_tool_calls: int | None) -> int | None:
    """Most tool calls one turn may output (None: no limit)."""
    if choice == "none":
        return 0
    if not parallel or (isinstance(choice, dict) and choice["type"] in CALLABLE):
        return 1 if max_tool_calls is None else min(1, max_tool_calls)
    return max_tool_calls


def call_rules(req: Any) -> dict:
    """``StreamState`` settings for a request (a ``CreateRequest``): the call limit, the names
    a call may have, which of them are custom tools, and how namespaced names split."""
    shown = offered_tools(req.tools, req.tool_choice)
    return {"max_calls": call_limit(req.tool_choice, req.parallel_tool_calls, req.max_tool_calls),
            "tool_names": frozenset(t["name"] for t in shown),
            "custom_tools": frozenset(t["name"] for t in shown if t["type"] == "custom"),
            "namespaces": {t["name"]: (t["namespace"], t["base"]) for t in shown if t["namespace"]}}
