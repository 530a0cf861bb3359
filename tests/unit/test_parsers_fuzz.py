"""Parsers on random mixes of markup fragments: never an exception, the piece protocol
holds (checked by `collect`), and the result does not depend on how the text is split.
Seeded, so a failure reproduces; the failing input is in the assertion message."""
from __future__ import annotations

import random

import pytest

from tests.unit.test_parsers import collect
from trtllm_service.parsing import create_parser

FRAGMENTS = [
    '{"name": "f", "arguments": {"a": [1, "}"]}}', '{"name": "g", "parameters": {}}',
    '[{"name": "f", "arguments": {}}]',
    'f[ARGS]{"a": 1}', "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]",
    "<think>", "</think>", "{", "}", "[", "]", '"name"', '"arguments"', '"parameters"', '"type"', '"f"', ": ", ", ",
    ";", '"', "\\", "<", " ", "\n", "x", "1", "null", "get_weather", "é",
]
COMBOS = [("hermes", None), ("llama3_json", None), ("mistral", None), ("hermes", "think"), (None, "think"),
          ("mistral", "think")]


@pytest.mark.parametrize("tool_parser, reasoning_parser", COMBOS)
def test_random_markup_never_breaks_the_protocol(tool_parser, reasoning_parser):
    rng = random.Random(f"{tool_parser}-{reasoning_parser}")
    for _ in range(1000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30)))
        options = {"tool_names": rng.choice([None, ["f"]]), "starts_in_reasoning": rng.random() < 0.3}

        def parse(chunks: list[str], options: dict = options) -> dict:
            return collect(create_parser(tool_parser, reasoning_parser, **options), chunks, markup_is_text=True)

        whole = parse([text])
        cut = rng.randint(1, max(1, len(text) - 1))
        assert parse(list(text)) == whole, (text, options)
        assert parse([text[:cut], text[cut:]]) == whole, (text, cut, options)
