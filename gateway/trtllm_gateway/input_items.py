"""Normalisation of a create request's ``input`` into canonical, id-carrying items.

Protocol: Responses API input (docs/responses-api.md §1). ``input`` is a string (one user message)
or a list of items; each item becomes the canonical form that is stored, listed by
``GET /v1/responses/{id}/input_items`` and replayed by ``previous_response_id``:

* ``message`` (``type`` may be omitted): roles user/system/developer take parts
  ``input_text``/``input_image``; role assistant takes ``output_text``/``refusal`` and keeps
  its ``phase`` (``commentary`` | ``final_answer``; ignored on other roles). A string
  content becomes one part of the role's text type. Ids: the caller's, else ``msg_…``.
* ``function_call`` {call_id, name, arguments, namespace?} -> id ``fc_…``;
* ``function_call_output`` {call_id, output} -> id ``fco_…``;
* ``reasoning`` {summary, content} -> id ``rs_…``;
* ``compaction`` {encrypted_content} (from ``/v1/responses/compact``) -> id ``cmp_…``;
* custom tool, shell, local shell and apply-patch calls and their outputs (``tool_items.py``).

* ``item_reference`` {id} (``type`` may be omitted: an object of only ``id``), in a create's
  input only (``references=True``): kept as a placeholder until :func:`resolve` puts the
  stored item it names in its place (``generation.resolve_input``; the store's
  ``find_items``: an input or output item of one of the tenant's stored responses). The
  stored item is normalised as if the client had sent it whole, keeping its id, so the
  response's stored input (``GET .../input_items``, later ``previous_response_id`` turns) holds
  the item itself, as OpenAI lists it. An id found nowhere, or only in another tenant's
  responses, is a 400 ``Item with id '…' not found.`` naming ``input[i]``.

Item and part counts are bounded (``limits.py``; again after references are resolved, as
the stored items bring their parts). Anything else (files, other hosted-tool items) is a 400
naming the path, e.g. ``input[2].content[0].type``. Image parts are collected so the caller
can refuse them when the model takes no images.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import compaction_item, tool_items
from .errors import ApiError, invalid, kind_of
from .ids import new_id
from .limits import DEFAULT_LIMITS, Limits, check_input

REFERENCE = "item_reference"

USER_ROLES = ("user", "system", "developer")
ROLES = USER_ROLES + ("assistant",)
IMAGE_DETAILS = ("auto", "low", "high")


@dataclass
class Normalized:
    """Canonical items plus where their images are (for capability checks)."""

    items: list[dict]
    image_params: list[str] = field(default_factory=list)
    references: list[int] = field(default_factory=list)  # item_reference placeholders, until resolve()
    stored: frozenset[int] = frozenset()  # items resolve() took from the store


def _str_field(item: dict, key: str, path: str, *, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise invalid(f"{path}.{key}", f"Invalid '{path}.{key}': expected a string.")
    return value


def _text_part(part: dict, path: str, kind: str) -> dict:
    return {"type": kind, "text": _str_field(part, "text", path)}


def _output_text_part(part: dict, path: str, kind: str) -> dict:
    return {"type": "output_text", "text": _str_field(part, "text", path), "annotations": []}


def _refusal_part(part: dict, path: str, kind: str) -> dict:
    return {"type": "refusal", "refusal": _str_field(part, "refusal", path)}


def _image_part(part: dict, path: str, kind: str) -> dict:
    if part.get("file_id") is not None:
        raise ApiError("unsupported", "Images by file_id are not supported; use image_url.",
                       param=f"{path}.file_id")
    url = _str_field(part, "image_url", path)
    detail = part.get("detail") or "auto"
    if detail not in IMAGE_DETAILS:
        raise invalid(f"{path}.detail", f"Invalid '{path}.detail': expected one of {IMAGE_DETAILS}.")
    return {"type": "input_image", "image_url": url, "detail": detail}


# part type -> builder, per role family.
USER_PARTS: dict[str, Callable[[dict, str, str], dict]] = {
    "input_text": _text_part,
    "input_image": _image_part,
}
ASSISTANT_PARTS: dict[str, Callable[[dict, str, str], dict]] = {
    "output_text": _output_text_part,
    "refusal": _refusal_part,
    "input_text": _output_text_part,  # lenient: some clients replay assistant text as input_text
}


def _content(role: str, content: Any, path: str, images: list[str]) -> list[dict]:
    assistant = role == "assistant"
    if isinstance(content, str):
        kind = "output_text" if assistant else "input_text"
        return [_output_text_part({"text": content}, path, kind) if assistant else {"type": kind, "text": content}]
    if not isinstance(content, list):
        raise invalid(f"{path}.content", f"Invalid '{path}.content': expected a string or an array of parts.")
    table = ASSISTANT_PARTS if assistant else USER_PARTS
    parts = []
    for j, part in enumerate(content):
        ppath = f"{path}.content[{j}]"
        if not isinstance(part, dict):
            raise invalid(ppath, f"Invalid '{ppath}': expected an object.")
        build = table.get(kind_of(part) or "")
        if build is None:
            raise invalid(f"{ppath}.type", f"Unsupported content part type {part.get('type')!r} "
                       f"for role {role!r}; expected one of {', '.join(table)}.")
        parts.append(build(part, ppath, part["type"]))
        if part["type"] == "input_image":
            images.append(ppath)
    return parts


def _message(item: dict, path: str, images: list[str]) -> dict:
    role = item.get("role")
    if role not in ROLES:
        raise invalid(f"{path}.role", f"Invalid '{path}.role': expected one of {', '.join(ROLES)}.")
    if "content" not in item:
        raise invalid(f"{path}.content", f"Missing required parameter: '{path}.content'.")
    out = {"id": _id(item, path, "msg"), "type": "message", "role": role,
           "content": _content(role, item["content"], path, images), "status": "completed"}
    phase = item.get("phase")
    if phase is not None and phase not in PHASES:
        raise invalid(f"{path}.phase", f"Invalid '{path}.phase': expected one of {', '.join(PHASES)}.")
    if phase is not None and role == "assistant":
        out["phase"] = phase  # kept and replayed as sent; the model is not shown it
    return out


ITEM_STATUSES = ("in_progress", "completed", "incomplete")
PHASES = ("commentary", "final_answer")


def _function_call(item: dict, path: str, images: list[str]) -> dict:
    # a replayed malformed call keeps its status (the gateway's own `error` field is dropped)
    status = item.get("status") if item.get("status") in ITEM_STATUSES else "completed"
    return tool_items.with_namespace({
        "id": _id(item, path, "fc"), "type": "function_call", "call_id": _str_field(item, "call_id", path),
        "name": _str_field(item, "name", path), "arguments": _str_field(item, "arguments", path),
        "status": status}, item, path)


def _function_call_output(item: dict, path: str, images: list[str]) -> dict:
    output = tool_items.text_output(item, path)
    return {"id": _id(item, path, "fco"), "type": "function_call_output",
            "call_id": _str_field(item, "call_id", path), "output": output, "status": "completed"}


def _texts(parts: Any, kind: str, path: str) -> list[dict]:
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise invalid(path, f"Invalid '{path}': expected an array of objects.")
    return [{"type": kind, "text": p.get("text") if isinstance(p.get("text"), str) else ""} for p in parts]


def _reasoning(item: dict, path: str, images: list[str]) -> dict:
    out = {"id": _id(item, path, "rs"), "type": "reasoning",
           "summary": _texts(item.get("summary"), "summary_text", f"{path}.summary"),
           "content": _texts(item.get("content"), "reasoning_text", f"{path}.content")}
    if isinstance(item.get("encrypted_content"), str):
        out["encrypted_content"] = item["encrypted_content"]
    return out


ITEM_TYPES: dict[str, Callable[[dict, str, list[str]], dict]] = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
    "compaction": compaction_item.normalize,
    **tool_items.ITEM_TYPES,
}


_id = tool_items._id  # one rule for a client-given item id


def _item_reference(item: dict, path: str) -> dict:
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise invalid(f"{path}.id", f"Invalid '{path}.id': expected a non-empty string.")
    return {"type": REFERENCE, "id": item_id}


def _kind(item: dict) -> Any:
    kind = item.get("type")
    if kind is not None:
        return kind
    # both have an optional type: an easy message has a role, a reference only its id
    return REFERENCE if "id" in item and set(item) <= {"id", "type"} else "message"


def resolve(norm: Normalized, found: dict[str, dict], limits: Limits = DEFAULT_LIMITS) -> None:
    """Put in place of each ``item_reference`` of ``norm`` the stored item ``found`` holds
    for its id (see the module docstring); the counts of ``limits`` are checked again."""
    for i in norm.references:
        path, item_id = f"input[{i}]", norm.items[i]["id"]
        item = found.get(item_id)
        if item is None:
            raise invalid(path, f"Item with id '{item_id}' not found.")
        build = ITEM_TYPES.get(item.get("type") or "")
        if build is None:
            raise invalid(path, f"Item with id '{item_id}' is a {item.get('type')!r} item, which cannot "
                          "be used as input.")
        norm.items[i] = build(item, path, norm.image_params)
    resolved, norm.references = norm.references, []
    norm.stored |= frozenset(resolved)
    check_input(norm.items, limits)
    _check_unique(norm.items, set(resolved))


def _check_unique(items: list[dict], references: set[int]) -> None:
    """No item repeats another item's id: a stored turn's item ids are list cursors, so a
    duplicate is refused here, as OpenAI does, rather than by the store after generating."""
    first: dict[Any, int] = {}
    for i, item in enumerate(items):
        j = first.setdefault(item.get("id"), i)
        if j != i:
            why = " (an item_reference names one of them)" if i in references or j in references else ""
            raise invalid(f"input[{i}]", f"Duplicate item id '{item['id']}' in 'input': input[{j}] and "
                          f"input[{i}] are the same item{why}.")


def normalize_input(value: Any, limits: Limits = DEFAULT_LIMITS, *, references: bool = False) -> Normalized:
    """Canonical items for ``input`` (a string or a list of items), within ``limits``.
    ``references``: accept ``item_reference`` items (a create's input), left for :func:`resolve`."""
    check_input(value, limits)
    if isinstance(value, str):
        return Normalized([{"id": new_id("msg"), "type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": value}], "status": "completed"}])
    if not isinstance(value, list):
        raise invalid("input", "Invalid type for 'input': expected a string or an array of items.")
    out = Normalized([])
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(path, f"Invalid '{path}': expected an object.")
        kind = _kind(item)
        if kind == REFERENCE and references:
            out.references.append(i)
            out.items.append(_item_reference(item, path))
            continue
        build = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if build is None:
            expected = [*ITEM_TYPES, REFERENCE] if references else ITEM_TYPES
            raise ApiError("unsupported", f"Input item type {kind!r} is not supported; expected one of "
                           f"{', '.join(expected)}.", param=f"{path}.type")
        out.items.append(build(item, path, out.image_params))
    _check_unique(out.items, set(out.references))
    return out
