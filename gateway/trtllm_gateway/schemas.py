"""JSON Schema checks for schemas that clients send (tool parameters, ``text.format``).

A schema is checked against its metaschema (``$schema`` when given, else Draft 2020-12,
what OpenAI's structured outputs document) with ``jsonschema``'s ``check_schema``; a schema
that fails is a 400 naming the field, e.g. ``param: "text.format.schema"``. Agent
frameworks resend the same tools every turn, so verdicts are cached by the schema's
canonical JSON text.
"""
from __future__ import annotations

import functools
import json

import jsonschema
from jsonschema.exceptions import SchemaError

from .errors import ApiError


@functools.lru_cache(maxsize=512)
def _problem(canonical: str) -> str | None:
    schema = json.loads(canonical)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{exc.message}" + (f" (at '{where}')" if where else "")
    return None


def check_schema(schema: dict, param: str) -> None:
    """400 ``invalid_request_error`` with ``param`` when ``schema`` is not a valid JSON Schema."""
    problem = _problem(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise ApiError("invalid_request", f"Invalid '{param}': not a valid JSON Schema: {problem}.", param=param)
