"""Hypothesis strategies for Responses request bodies: mostly-valid shapes with hostile values.

Each field draws either a plausible value (the kind the API documents, at and past its
edges) or any JSON value, so cases sit near the valid/invalid border where parsing code
branches. Strings include surrogate escapes, NULs and long runs; numbers include huge
integers and floats.
"""
from __future__ import annotations

from hypothesis import strategies as st

INT_EDGES = [0, -1, 1, 15, 16, 2**31 - 1, 2**31, 2**32, 2**63, 2**64, 10**22, -(2**63)]
text = st.one_of(st.text(max_size=20), st.sampled_from(["", "\x00", "\ud800", "a" * 300, "default", "resp_x"]))
numbers = st.one_of(st.integers(), st.sampled_from(INT_EDGES), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def _either(plausible):
    """The plausible value most of the time, any JSON value otherwise."""
    return st.one_of(plausible, plausible, plausible, json_values)


def _obj(**fields):
    """An object with any subset of ``fields`` (each drawn by its strategy)."""
    return st.fixed_dictionaries({}, optional={k: _either(v) for k, v in fields.items()})


ROLES = st.sampled_from(["user", "system", "developer", "assistant", "tool", "robot"])
PART_TYPES = st.sampled_from(["input_text", "output_text", "refusal", "input_image", "input_file", "summary_text"])
part = _obj(type=PART_TYPES, text=text, refusal=text, image_url=text, detail=st.sampled_from(["auto", "low", "x"]),
            file_id=text)
parts = st.lists(_either(part), max_size=4)
schema = st.one_of(st.just({"type": "object"}), st.just({"type": "object", "properties": {"a": {"type": "string"}}}),
                   st.dictionaries(st.sampled_from(["type", "properties", "required", "items", "$ref", "enum"]),
                                   json_values, max_size=4))
message = _obj(type=st.just("message"), role=ROLES, content=st.one_of(text, parts), id=text, status=text)
function_call = _obj(type=st.just("function_call"), call_id=text, name=text, arguments=text, id=text)
call_output = _obj(type=st.just("function_call_output"), call_id=text, output=st.one_of(text, parts), id=text)
reasoning = _obj(type=st.just("reasoning"), summary=parts, content=parts, encrypted_content=text, id=text)
compaction = _obj(type=st.just("compaction"), encrypted_content=text, id=text)
other_item = _obj(type=st.one_of(text, json_values), role=ROLES, content=parts)
item = st.one_of(message, function_call, call_output, reasoning, compaction, other_item)
tool = _obj(type=st.sampled_from(["function", "web_search", "custom"]), name=text, description=text,
            parameters=schema, strict=st.booleans())
tool_choice = st.one_of(st.sampled_from(["auto", "none", "required", "sometimes"]),
                        _obj(type=st.sampled_from(["function", "allowed_tools", "x"]), name=text,
                             mode=st.sampled_from(["auto", "required"]), tools=st.lists(_either(tool), max_size=2)))
text_format = _obj(type=st.sampled_from(["text", "json_object", "json_schema", "grammar"]), name=text, schema=schema,
                   strict=st.booleans(), description=text)

CREATE_FIELDS = {
    "model": st.sampled_from(["default", "fuzz-model", "gpt-5"]),
    "input": st.one_of(text, st.lists(item, max_size=5)),
    "instructions": text,
    "previous_response_id": text,
    "store": st.booleans(),
    "stream": st.booleans(),
    "background": st.booleans(),
    "max_output_tokens": st.one_of(st.integers(0, 64), st.sampled_from(INT_EDGES)),
    "max_tool_calls": st.sampled_from(INT_EDGES),
    "temperature": numbers,
    "top_p": numbers,
    "top_logprobs": st.integers(-1, 25),
    "presence_penalty": numbers,
    "frequency_penalty": numbers,
    "truncation": st.sampled_from(["auto", "disabled", "maybe"]),
    "metadata": st.dictionaries(text, text, max_size=18),
    "parallel_tool_calls": st.booleans(),
    "tool_choice": tool_choice,
    "tools": st.lists(tool, max_size=3),
    "reasoning": _obj(effort=st.sampled_from(["low", "high", "max", "extreme"]),
                      summary=st.sampled_from(["auto", "x"])),
    "text": _obj(format=text_format, verbosity=st.sampled_from(["low", "loud"])),
    "include": st.lists(st.sampled_from(["message.output_text.logprobs", "reasoning.encrypted_content", "x"]),
                        max_size=2),
    "conversation": st.one_of(text, _obj(id=text)),
    "service_tier": st.sampled_from(["auto", "default", "flex", "premium"]),
    "user": text,
    "prompt": json_values,
    "context_management": json_values,
    "unknown_field": json_values,
}

create_body = st.fixed_dictionaries(
    {"model": _either(CREATE_FIELDS["model"]), "input": _either(CREATE_FIELDS["input"])},
    optional={k: _either(v) for k, v in CREATE_FIELDS.items() if k not in ("model", "input")})
conversation_body = _obj(items=st.lists(item, max_size=4), metadata=st.dictionaries(text, text, max_size=3))
