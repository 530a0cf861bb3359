"""What the simulator writes is what the service's parsers read: a call in each tool parser's
syntax, arguments valid against the tool's schema, reasoning inside the reasoning markup."""
from __future__ import annotations

import json
import random

import jsonschema
import pytest

from trtllm_service.engine.base import OutputSyntax
from trtllm_service.engine.sim_script import ScriptWriter, call_text, minimal_instance
from trtllm_service.guided import FORMATS
from trtllm_service.parsing import create_parser

SCHEMAS = [
    {},
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "code": {"type": "string", "minLength": 5, "maxLength": 8}, "tags": {"type": "array", "minItems": 2,
                                                                              "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number", "exclusiveMinimum": 0}},
                  "required": ["lat"]},
        "mode": {"anyOf": [{"const": "fast"}, {"type": "null"}]}, "flag": {"type": ["boolean", "null"]},
    }, "required": ["unit", "days", "code", "tags", "where", "mode", "flag"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["empty", "one-string", "mixed"])
def test_minimal_instance_satisfies_the_schema(schema: dict) -> None:
    jsonschema.validate(minimal_instance(schema), schema)


@pytest.mark.parametrize("tool_parser", sorted(FORMATS))
def test_the_call_is_read_by_that_tool_parser(tool_parser: str) -> None:
    text = call_text(tool_parser, "get_weather", json.dumps(SCHEMAS[1]))
    parser = create_parser(tool_parser, None, tool_names=["get_weather"])
    parsed = parser.feed(text).extend(parser.finish())
    assert parsed.text.strip() == "" and parser.saw_tool_calls
    assert [p.name for p in parsed.tool_calls if p.name] == ["get_weather"]
    assert not any(p.error for p in parsed.tool_calls)
    assert json.loads("".join(p.arguments_delta for p in parsed.tool_calls)) == {"city": "sim"}


def test_reasoning_is_wrapped_in_the_parsers_tags_unless_the_prompt_opened_them(tokenizer) -> None:
    writer = ScriptWriter(tokenizer, reasoning_tokens=5, output_tokens=4, tool_calls=False)
    for opened in (False, True):
        ids = writer.script(OutputSyntax(reasoning_parser="think", starts_in_reasoning=opened), random.Random(1))
        parser = create_parser(None, "think", starts_in_reasoning=opened)
        parsed = parser.feed(tokenizer.decode(ids)).extend(parser.finish())
        assert parsed.reasoning and parsed.text and "think>" not in parsed.reasoning + parsed.text
    no_parser = writer.script(OutputSyntax(), random.Random(1))
    assert len(no_parser) == 4


def test_seeded_scripts_repeat_and_differ_between_seeds(tokenizer) -> None:
    writer = ScriptWriter(tokenizer, reasoning_tokens=0, output_tokens=16, tool_calls=False)
    first, again, other = (writer.script(OutputSyntax(), random.Random(seed)) for seed in (5, 5, 6))
    assert first == again != other and len(first) == 16
