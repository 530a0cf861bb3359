"""The shape of the output: ``text`` (structured output) and ``reasoning`` settings.

Protocol: OpenAI Responses ``text`` and ``reasoning`` request fields (docs/responses-api.md §1-§2).

``text``: ``{format, verbosity}``; ``format`` is one of

* ``{type: "text"}`` (default);
* ``{type: "json_object"}``: the output is a JSON object;
* ``{type: "json_schema", name, schema, strict?, description?}``: the output is JSON valid
  against ``schema``. ``name`` matches ``^[a-zA-Z0-9_-]{1,64}$``; ``schema`` must pass its
  metaschema (400 ``param: "text.format.schema"`` otherwise).

Both JSON formats are enforced during decoding by the service (``GenerateRequest.
response_format``: xgrammar on the CPU engine, ``GuidedDecodingParams`` on TensorRT-LLM).
When the turn forces a tool call, the grammar of the call already decides the whole output,
so no response format is sent (one constraint per request). The schema travels as UTF-8
JSON, like tool ``parameters``. ``verbosity`` (low | medium | high) is accepted and echoed;
it does not change decoding. The echo is the normalised ``{format, verbosity}``.

``reasoning``: ``{effort, summary, context?, mode?}`` (``generate_summary`` is the
deprecated name of ``summary``; ``context`` and ``mode`` are echoed only when given:
``context`` decides which earlier reasoning items the model sees, ``translate.py``; ``mode``
is accepted and changes nothing). ``effort`` is one of the SDK's levels; the service takes ``none``/``low``/
``medium``/``high`` and maps them to the chat template's thinking switch where the model
has one (``minimal`` is sent as ``low``, ``xhigh``/``max`` as ``high``); a model without
one ignores it. ``summary`` is echoed and, when set, makes the reasoning text the
reasoning item's summary part (no summarizer model: ``streaming.py``'s reasoning kind).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .errors import invalid, kind_of
from .schemas import check_schema
from .tools import NAME_RE

PLAIN_TEXT: dict[str, Any] = {"format": {"type": "text"}, "verbosity": "medium"}
VERBOSITY = ("low", "medium", "high")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
EFFORT_TO_SERVICE = {"minimal": "low", "xhigh": "high", "max": "high"}
SUMMARIES = ("auto", "concise", "detailed")
CONTEXTS = ("auto", "current_turn", "all_turns")


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(param, f"Invalid type for '{param}': expected an object.")
    return value


def _plain(fmt: dict, param: str) -> dict:
    return {"type": "text"}


def _json_object(fmt: dict, param: str) -> dict:
    return {"type": "json_object"}


def _json_schema(fmt: dict, param: str) -> dict:
    name = fmt.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid(f"{param}.name", f"Invalid '{param}.name': expected 1 to 64 letters, digits, '_' or '-'.")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise invalid(f"{param}.schema", f"Missing or invalid '{param}.schema': expected a JSON Schema object.")
    check_schema(schema, f"{param}.schema")
    strict, description = fmt.get("strict"), fmt.get("description")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(f"{param}.strict", f"Invalid type for '{param}.strict': expected a boolean.")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{param}.description", f"Invalid type for '{param}.description': expected a string.")
    return {"type": "json_schema", "name": name, "schema": schema, "strict": strict, "description": description}


FORMATS: dict[str, Callable[[dict, str], dict]] = {
    "text": _plain, "json_object": _json_object, "json_schema": _json_schema}


def validate_text(name: str, value: Any) -> dict:
    """``text`` in its echo form."""
    value = _object(value, name)
    verbosity = value.get("verbosity")
    if verbosity is not None and verbosity not in VERBOSITY:
        raise invalid(f"{name}.verbosity", f"Invalid '{name}.verbosity': expected one of {', '.join(VERBOSITY)}.")
    fmt = value.get("format")
    if fmt is None:
        return {"format": {"type": "text"}, "verbosity": verbosity or "medium"}
    fmt = _object(fmt, f"{name}.format")
    build = FORMATS.get(kind_of(fmt) or "")
    if build is None:
        raise invalid(f"{name}.format.type", f"Invalid '{name}.format.type': expected one of {', '.join(FORMATS)}.")
    return {"format": build(fmt, f"{name}.format"), "verbosity": verbosity or "medium"}


def validate_reasoning(name: str, value: Any) -> dict:
    """``reasoning`` in its echo form ``{effort, summary}``."""
    value = _object(value, name)
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid(f"{name}.effort", f"Invalid '{name}.effort': expected one of {', '.join(EFFORTS)}.")
    summary = value.get("summary", value.get("generate_summary"))
    if summary is not None and summary not in SUMMARIES:
        raise invalid(f"{name}.summary", f"Invalid '{name}.summary': expected one of {', '.join(SUMMARIES)}.")
    echo = {"effort": effort, "summary": summary}
    context, mode = value.get("context"), value.get("mode")
    if context is not None:
        if context not in CONTEXTS:
            raise invalid(f"{name}.context", f"Invalid '{name}.context': expected one of {', '.join(CONTEXTS)}.")
        echo["context"] = context  # which reasoning items the model sees again (translate.py)
    if mode is not None:
        if not isinstance(mode, str):
            raise invalid(f"{name}.mode", f"Invalid type for '{name}.mode': expected a string.")
        echo["mode"] = mode  # OpenAI's execution mode ("standard", "pro"): one mode here, echoed
    return echo


def structured(text: dict) -> bool:
    return text["format"]["type"] != "text"


def response_format(text: dict) -> pb.ResponseFormat | None:
    """The proto constraint for ``text.format`` (None for plain text)."""
    fmt = text["format"]
    if fmt["type"] == "json_object":
        return pb.ResponseFormat(json_object=True)
    if fmt["type"] == "json_schema":
        return pb.ResponseFormat(json_schema=pb.JsonSchemaFormat(
            name=fmt["name"], schema_json=json.dumps(fmt["schema"], ensure_ascii=False), strict=bool(fmt["strict"])))
    return None


def service_effort(reasoning: dict | None) -> str | None:
    effort = (reasoning or {}).get("effort")
    return None if effort is None else EFFORT_TO_SERVICE.get(effort, effort)
