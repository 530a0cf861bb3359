"""Size limits of a create request, and reading large bodies off the event loop.

A legal body under ``--max-body-bytes`` can still hold hundreds of thousands of items, parts
or schema nodes, and every one of them costs Python work (validation, normalisation, the
proto ``Chat``). These limits bound that work with a clear 400 naming the field, checked
before the work starts (all configurable, docs/gateway.md "Request limits"):

* ``--max-input-items`` (10,000): items in ``input``; also content parts in all items
  together (``content``, a ``function_call_output``'s ``output`` parts, a reasoning item's
  ``summary``).
* ``--max-content-parts`` (1,000): content parts in one item.
* ``--max-tools`` (128, OpenAI's own limit): entries of ``tools``, a namespace's tools
  counted one by one.
* ``--max-schema-bytes`` (1 MiB): JSON Schema in the request, as compact UTF-8 JSON: every
  tool's ``parameters`` plus ``text.format.schema``.

Bodies of ``OFF_LOOP_BYTES`` or more are parsed and validated in a worker thread
(:func:`read_create`, :func:`read_json`), so other requests (``/healthz``, streams) keep
being served. ``json.loads`` itself holds the GIL; it is the one step that still pauses the
loop, for well under a second at the 16 MiB default body limit.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from .errors import invalid
from .settings import GatewaySettings

#: Below this many bytes a body is parsed on the loop: a thread hop costs more than the parse.
OFF_LOOP_BYTES = 64 * 1024
OFF_LOOP_ITEMS = 64
#: Item fields that hold a list of parts.
PART_LISTS = ("content", "output", "summary")


class Limits(Protocol):
    """What the checks read (``GatewaySettings`` has these fields; read-only, as it is frozen)."""

    @property
    def max_input_items(self) -> int: ...
    @property
    def max_content_parts(self) -> int: ...
    @property
    def max_tools(self) -> int: ...
    @property
    def max_schema_bytes(self) -> int: ...
    @property
    def hosted_tools(self) -> str: ...  # the --hosted-tools policy (hosted_tools.py)
    @property
    def default_temperature(self) -> float: ...  # for requests that send none
    @property
    def default_max_output_tokens(self) -> int: ...  # for requests that send none (0: no cap)


DEFAULT_LIMITS: Limits = GatewaySettings()


def check_input(value: Any, limits: Limits) -> None:
    """Item and part counts of ``input`` (before any item is looked at closely)."""
    if not isinstance(value, list):
        return
    if len(value) > limits.max_input_items:
        raise invalid("input", f"Invalid 'input': {len(value)} items; at most {limits.max_input_items} are "
                      "allowed (this server's --max-input-items).")
    total = 0
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        for key in PART_LISTS:
            parts = item.get(key)
            if not isinstance(parts, list):
                continue
            if len(parts) > limits.max_content_parts:
                raise invalid(f"input[{i}].{key}", f"Invalid 'input[{i}].{key}': {len(parts)} parts; at most "
                              f"{limits.max_content_parts} are allowed (this server's --max-content-parts).")
            total += len(parts)
    if total > limits.max_input_items:
        raise invalid("input", f"Invalid 'input': {total} content parts in all; at most {limits.max_input_items} "
                      "are allowed (this server's --max-input-items).")


def check_tools_and_schemas(body: dict, limits: Limits) -> None:
    """The number of tools and the bytes of JSON Schema (before any schema is validated)."""
    tools = body.get("tools")
    tools = _with_members(tools if isinstance(tools, list) else [])
    if len(tools) > limits.max_tools:
        raise invalid("tools", f"Invalid 'tools': {len(tools)} tools (namespaces' tools included); at most "
                      f"{limits.max_tools} are allowed.")
    schemas = [(f"{path}.parameters", t.get("parameters")) for path, t in tools]
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        schemas.append(("text.format.schema", fmt.get("schema")))
    total = 0
    for param, schema in schemas:
        if isinstance(schema, dict):
            total += len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())
            if total > limits.max_schema_bytes:
                raise invalid(param, f"Invalid '{param}': the request's JSON Schemas (tool parameters and "
                              f"text.format) exceed {limits.max_schema_bytes} bytes (this server's "
                              "--max-schema-bytes).")


def _with_members(tools: list) -> list[tuple[str, dict]]:
    """(path, tool) of every tool object, the tools of namespace tools in their place."""
    out: list[tuple[str, dict]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        members = tool.get("tools") if tool.get("type") == "namespace" else None
        if isinstance(members, list):
            out.extend((f"tools[{i}].tools[{j}]", m) for j, m in enumerate(members) if isinstance(m, dict))
        else:
            out.append((f"tools[{i}]", tool))
    return out


async def off_loop(raw: bytes, work):
    """``work()``, in a worker thread when ``raw`` is large enough to stall the loop."""
    if len(raw) < OFF_LOOP_BYTES:
        return work()
    return await asyncio.to_thread(work)


def _text_size(item: dict) -> int:
    """The item's string fields and its parts' ``text``: what translating it walks and copies."""
    size = 0
    for value in item.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += sum(len(p["text"]) for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return size


async def off_loop_items(items: list[dict], work):
    """``work()`` over ``items`` (a window: history and input), in a worker thread when there
    are more than ``OFF_LOOP_ITEMS`` of them or their text passes ``OFF_LOOP_BYTES``:
    building the Chat of 10,000 items takes about 90 ms, which would stall every stream."""
    if len(items) <= OFF_LOOP_ITEMS and sum(_text_size(item) for item in items) < OFF_LOOP_BYTES:
        return work()
    return await asyncio.to_thread(work)
