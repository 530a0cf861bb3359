"""History items of tool calls other than functions: custom tools and the calls of hosted
environments (shell, local shell, apply patch), and what the model sees of them.

Protocol: Responses input items (docs/responses-api.md §1, "Input items"). Each is
normalised to a canonical, id-carrying form (stored and replayed like every input item) and
rendered to the model as an ordinary tool call and tool result, since chat templates know
nothing else:

* ``custom_tool_call`` {call_id, name, input, namespace?} (id ``ctc_…``): a call of
  ``[namespace.]name`` with arguments ``{"input": input}``, as custom tools are offered
  (``custom_tools.py``); ``custom_tool_call_output`` {call_id, output} (``ctco_…``): a result,
  the output's text;
* ``shell_call`` {call_id, action: {commands, timeout_ms?, max_output_length?}} (``shc_…``):
  a call of ``shell`` with the action as arguments; ``shell_call_output`` {call_id, output:
  [{stdout, stderr, outcome}]} (``shco_…``): stdout, stderr and the exit code (or "timed
  out") of each chunk;
* ``local_shell_call`` {call_id, action: {type: "exec", command, ...}} (``lsh_…``): a call of
  ``local_shell`` with the action as arguments; ``local_shell_call_output`` {id, output}:
  the output (its required ``id`` names the call's ``call_id``, as OpenAI defines it);
* ``apply_patch_call`` {call_id, operation: {type, path, diff?}} (``apc_…``): a call of
  ``apply_patch`` with the operation as arguments; ``apply_patch_call_output`` {call_id,
  status, output?} (``apco_…``): the status, then the output.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from . import custom_tools
from .errors import invalid
from .ids import new_id
from .tools import NAME_RE

STATUSES = ("in_progress", "completed", "incomplete")


def _id(item: dict, path: str, prefix: str) -> str:
    given = item.get("id")
    if given is None:
        return new_id(prefix)
    if not isinstance(given, str) or not given:
        raise invalid(f"{path}.id", f"Invalid '{path}.id': expected a non-empty string.")
    return given


def _str(item: dict, key: str, path: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise invalid(f"{path}.{key}", f"Invalid '{path}.{key}': expected a string.")
    return value


def _status(item: dict, allowed: tuple[str, ...] = STATUSES) -> str:
    return item["status"] if item.get("status") in allowed else "completed"


def _object(item: dict, key: str, path: str, strings: str) -> dict:
    """``item[key]`` as an object whose ``strings`` key is a list of strings."""
    value = item.get(key)
    if not isinstance(value, dict):
        raise invalid(f"{path}.{key}", f"Invalid '{path}.{key}': expected an object.")
    listed = value.get(strings)
    if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
        raise invalid(f"{path}.{key}.{strings}", f"Invalid '{path}.{key}.{strings}': expected an array of strings.")
    return dict(value)


def text_output(item: dict, path: str) -> str:
    """A tool output given as a string or as content parts (their text, joined)."""
    output = item.get("output")
    if isinstance(output, list):
        texts = [p.get("text", "") for p in output if isinstance(p, dict)]
        if not all(isinstance(t, str) for t in texts):
            raise invalid(f"{path}.output", f"Invalid '{path}.output': each part's 'text' must be a string.")
        output = "".join(texts)
    if not isinstance(output, str):
        raise invalid(f"{path}.output", f"Invalid '{path}.output': expected a string.")
    return output


def with_namespace(out: dict, item: dict, path: str) -> dict:
    """``out`` with the call's ``namespace`` (of a tool inside a namespace tool), if it has one."""
    namespace = item.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str) or not NAME_RE.match(namespace):
            raise invalid(f"{path}.namespace", f"Invalid '{path}.namespace': expected a tool namespace name.")
        out["namespace"] = namespace
    return out


def custom_tool_call(item: dict, path: str, images: list[str]) -> dict:
    return with_namespace({"id": _id(item, path, "ctc"), "type": "custom_tool_call",
                           "call_id": _str(item, "call_id", path), "name": _str(item, "name", path),
                           "input": _str(item, "input", path), "status": _status(item)}, item, path)


def custom_tool_call_output(item: dict, path: str, images: list[str]) -> dict:
    return {"id": _id(item, path, "ctco"), "type": "custom_tool_call_output",
            "call_id": _str(item, "call_id", path), "output": text_output(item, path), "status": "completed"}


def shell_call(item: dict, path: str, images: list[str]) -> dict:
    return {"id": _id(item, path, "shc"), "type": "shell_call", "call_id": _str(item, "call_id", path),
            "action": _object(item, "action", path, "commands"), "status": _status(item)}


def _chunks(item: dict, path: str) -> list[dict]:
    output = item.get("output")
    if not isinstance(output, list):
        raise invalid(f"{path}.output", f"Invalid '{path}.output': expected an array of output chunks.")
    chunks = []
    for j, chunk in enumerate(output):
        cpath = f"{path}.output[{j}]"
        if not isinstance(chunk, dict):
            raise invalid(cpath, f"Invalid '{cpath}': expected an object.")
        outcome = chunk.get("outcome")
        if not isinstance(outcome, dict) or outcome.get("type") not in ("exit", "timeout"):
            raise invalid(f"{cpath}.outcome", f"Invalid '{cpath}.outcome': expected {{type: 'exit' | 'timeout'}}.")
        chunks.append({"stdout": _str(chunk, "stdout", cpath), "stderr": _str(chunk, "stderr", cpath),
                       "outcome": dict(outcome)})
    return chunks


def shell_call_output(item: dict, path: str, images: list[str]) -> dict:
    out = {"id": _id(item, path, "shco"), "type": "shell_call_output", "call_id": _str(item, "call_id", path),
           "output": _chunks(item, path), "status": _status(item)}
    if isinstance(item.get("max_output_length"), int):
        out["max_output_length"] = item["max_output_length"]
    return out


def local_shell_call(item: dict, path: str, images: list[str]) -> dict:
    return {"id": _id(item, path, "lsh"), "type": "local_shell_call", "call_id": _str(item, "call_id", path),
            "action": _object(item, "action", path, "command"), "status": _status(item)}


def local_shell_call_output(item: dict, path: str, images: list[str]) -> dict:
    return {"id": _str(item, "id", path), "type": "local_shell_call_output", "output": _str(item, "output", path),
            "status": _status(item)}


def apply_patch_call(item: dict, path: str, images: list[str]) -> dict:
    operation = item.get("operation")
    if not isinstance(operation, dict) or operation.get("type") not in ("create_file", "update_file", "delete_file"):
        raise invalid(f"{path}.operation", f"Invalid '{path}.operation': expected {{type: 'create_file' | "
                      "'update_file' | 'delete_file', path, diff?}.")
    _str(operation, "path", f"{path}.operation")
    return {"id": _id(item, path, "apc"), "type": "apply_patch_call", "call_id": _str(item, "call_id", path),
            "operation": dict(operation), "status": _status(item, ("in_progress", "completed"))}


def apply_patch_call_output(item: dict, path: str, images: list[str]) -> dict:
    if item.get("status") not in ("completed", "failed"):
        raise invalid(f"{path}.status", f"Invalid '{path}.status': expected 'completed' or 'failed'.")
    out = {"id": _id(item, path, "apco"), "type": "apply_patch_call_output", "call_id": _str(item, "call_id", path),
           "status": item["status"]}
    if item.get("output") is not None:
        out["output"] = _str(item, "output", path)
    return out


ITEM_TYPES: dict[str, Callable[[dict, str, list[str]], dict]] = {
    "custom_tool_call": custom_tool_call, "custom_tool_call_output": custom_tool_call_output,
    "shell_call": shell_call, "shell_call_output": shell_call_output,
    "local_shell_call": local_shell_call, "local_shell_call_output": local_shell_call_output,
    "apply_patch_call": apply_patch_call, "apply_patch_call_output": apply_patch_call_output,
}


def qualified(item: dict) -> str:
    """The name a call item's tool was offered under (``namespace.name`` in a namespace)."""
    return f"{item['namespace']}.{item['name']}" if item.get("namespace") else item["name"]


# call item type -> (tool name, arguments JSON) as the model sees the call
CALLS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "custom_tool_call": lambda it: (qualified(it), custom_tools.arguments(it["input"])),
    "shell_call": lambda it: ("shell", json.dumps(it["action"], ensure_ascii=False)),
    "local_shell_call": lambda it: ("local_shell", json.dumps(it["action"], ensure_ascii=False)),
    "apply_patch_call": lambda it: ("apply_patch", json.dumps(it["operation"], ensure_ascii=False)),
}


def _shell_text(item: dict) -> str:
    parts = []
    for chunk in item["output"]:
        text = chunk["stdout"] + (f"\nstderr:\n{chunk['stderr']}" if chunk["stderr"] else "")
        outcome = chunk["outcome"]
        parts.append(text + ("\n(timed out)" if outcome["type"] == "timeout"
                             else f"\n(exit code {outcome.get('exit_code')})"))
    return "\n".join(parts)


def _patch_text(item: dict) -> str:
    return item["status"] + (f"\n{item['output']}" if item.get("output") else "")


# result item type -> (the call id it answers, its text) as the model sees it
RESULTS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "custom_tool_call_output": lambda it: (it["call_id"], it["output"]),
    "shell_call_output": lambda it: (it["call_id"], _shell_text(it)),
    "local_shell_call_output": lambda it: (it["id"], it["output"]),
    "apply_patch_call_output": lambda it: (it["call_id"], _patch_text(it)),
}
