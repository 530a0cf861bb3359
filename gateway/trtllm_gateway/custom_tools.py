"""Custom tools: tools called with free-form text instead of JSON arguments.

Protocol: the Responses ``custom`` tool (docs/responses-api.md §1, "Tools") is
``{type: "custom", name, description?, format?}``, where ``format`` is ``{type: "text"}``
(the default: any text) or ``{type: "grammar", syntax: "lark" | "regex", definition}``. The
model's call is a ``custom_tool_call`` output item ``{id "ctc_…", call_id, name, input,
status}`` (``namespace`` too for a tool inside a namespace), streamed as
``response.custom_tool_call_input.delta`` / ``.done``; the client answers with a
``custom_tool_call_output`` input item.

How the model sees and calls one (the representation between gateway and service): as a
function whose arguments are one string, ``{"input": "<the text>"}`` (:data:`INPUT_SCHEMA`),
so every chat template and tool parser serves it unchanged. The proto ``Tool`` carries
``custom`` (syntax, definition and the request path of the definition); the service checks
the grammar (an invalid one is a 400 naming ``tools[i].format.definition``) and constrains
the JSON string's *decoded* value to it with xgrammar. The gateway knows which offered
names are custom tools, and for those turns the function-call argument pieces back into
text: :class:`InputDecoder` decodes the ``input`` string as it streams, and the finished
arguments decide the item's ``input``.
"""
from __future__ import annotations

import json
import re
from typing import Any

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .errors import invalid, kind_of

SYNTAXES = ("lark", "regex")
INPUT_KEY = "input"
INPUT_SCHEMA = {"type": "object", "properties": {INPUT_KEY: {"type": "string"}}, "required": [INPUT_KEY],
                "additionalProperties": False}
_TEXT = {"type": "text"}


def validate_format(value: Any, path: str) -> dict:
    """A custom tool's ``format`` in its echo form (the default is text)."""
    if value is None:
        return dict(_TEXT)
    if not isinstance(value, dict):
        raise invalid(path, f"Invalid type for '{path}': expected an object.")
    kind = kind_of(value)
    if kind == "text":
        return dict(_TEXT)
    if kind != "grammar":
        raise invalid(f"{path}.type", f"Invalid '{path}.type': expected 'text' or 'grammar'.")
    if value.get("syntax") not in SYNTAXES:
        raise invalid(f"{path}.syntax", f"Invalid '{path}.syntax': expected 'lark' or 'regex'.")
    definition = value.get("definition")
    if not isinstance(definition, str) or not definition.strip():
        raise invalid(f"{path}.definition", f"Invalid '{path}.definition': expected a non-empty grammar.")
    return {"type": "grammar", "syntax": value["syntax"], "definition": definition}


def model_description(tool: dict) -> str:
    """What the model is told about a custom tool: its description and how to call it."""
    fmt = tool["format"]
    how = f'Call it with {{"{INPUT_KEY}": "<text>"}}'
    if fmt["type"] == "grammar":
        how += f"; the text must match this {fmt['syntax']} grammar:\n{fmt['definition']}"
    else:
        how += "; the text is free-form."
    return f"{tool['description']}\n\n{how}" if tool["description"] else how


def proto_format(tool: dict, path: str) -> pb.CustomToolFormat:
    fmt = tool["format"]
    if fmt["type"] != "grammar":
        return pb.CustomToolFormat(syntax="text")
    return pb.CustomToolFormat(syntax=fmt["syntax"], definition=fmt["definition"], param=f"{path}.format.definition")


def arguments(text: str) -> str:
    """The function-call arguments that stand for a custom call's ``input`` (history)."""
    return json.dumps({INPUT_KEY: text}, ensure_ascii=False)


def input_of(arguments_json: str) -> str | None:
    """A finished call's input, or None when its arguments are not ``{"input": <string>}``."""
    try:
        parsed = json.loads(arguments_json)
    except ValueError:
        return None
    if isinstance(parsed, dict) and set(parsed) == {INPUT_KEY} and isinstance(parsed[INPUT_KEY], str):
        return parsed[INPUT_KEY]
    return None


_OPENING = re.compile(r'\s*\{\s*"' + INPUT_KEY + r'"\s*:\s*"')
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class InputDecoder:
    """Decodes the ``input`` string of streamed arguments ``{"input": "..."}`` piece by piece.

    ``feed(piece)`` returns the newly decoded text. Arguments of another shape stop the
    stream (``feed`` returns "" from then on); the finished arguments still decide the item
    (:func:`input_of`). O(1) work per character."""

    def __init__(self) -> None:
        self._head = ""            # text before the string value starts
        self._state = "head"       # head | text | escape | unicode | done
        self._hex = ""
        self._high: int | None = None  # a UTF-16 high surrogate waiting for its pair

    def feed(self, piece: str) -> str:
        if self._state == "head":
            self._head += piece
            match = _OPENING.match(self._head)
            if match is None:
                if len(self._head) > 64 or not _could_open(self._head):
                    self._state = "done"
                return ""
            piece, self._head, self._state = self._head[match.end():], "", "text"
        out: list[str] = []
        for char in piece:
            if self._state == "done":
                break
            self._step(char, out)
        return "".join(out)

    def _step(self, char: str, out: list[str]) -> None:
        if self._state == "text":
            if char == "\\":
                self._state = "escape"
            elif char == '"':
                self._state = "done"
            else:
                self._emit(char, out)
        elif self._state == "escape":
            if char == "u":
                self._state, self._hex = "unicode", ""
            else:
                self._emit(_SIMPLE_ESCAPES.get(char, char), out)
                self._state = "text"
        elif self._state == "unicode":
            self._hex += char
            if len(self._hex) == 4:
                self._state = "text"
                self._code(int(self._hex, 16) if _is_hex(self._hex) else 0xFFFD, out)

    def _code(self, code: int, out: list[str]) -> None:
        if 0xD800 <= code < 0xDC00:
            self._high = code
            return
        if 0xDC00 <= code < 0xE000 and self._high is not None:
            code = 0x10000 + ((self._high - 0xD800) << 10) + (code - 0xDC00)
            self._high = None
        self._emit(chr(code) if not 0xD800 <= code < 0xE000 else "\ufffd", out)

    def _emit(self, text: str, out: list[str]) -> None:
        if self._high is not None:  # a high surrogate without its pair
            out.append("\ufffd")
            self._high = None
        out.append(text)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _could_open(head: str) -> bool:
    """Whether ``head`` may still grow into ``{"input": "``."""
    stripped = "".join(head.split())
    target = '{"' + INPUT_KEY + '":"'
    return target.startswith(stripped) or stripped.startswith(target)
