"""Each parser on recorded model outputs, whole and split at every character boundary.

The samples are in `tests/fixtures/recorded_outputs/`, with what each must parse to in
`cases.json`: visible text, reasoning, and calls (name, exact arguments text, and a
substring of the error or null). The `smollm2_*` samples were recorded from the default
model under the forced-call grammar; the others are written in each family's documented
output format, including the ways small models get it wrong.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.unit.test_parsers import collect
from trtllm_service.parsing import create_parser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recorded_outputs"
CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))


def _parse(case: dict, chunks: list[str]) -> dict:
    parser = create_parser(case.get("tool_parser"), case.get("reasoning_parser"), tool_names=case.get("tool_names"),
                           starts_in_reasoning=case.get("starts_in_reasoning", False))
    return collect(parser, chunks)


def _sample(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_every_sample_has_a_case():
    assert {p.name for p in FIXTURES.glob("*.txt")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_output_parses_as_expected(name):
    case = CASES[name]
    result = _parse(case, [_sample(name)])
    assert result["text"] == case["text"]
    assert result["reasoning"] == case.get("reasoning", "")
    assert len(result["calls"]) == len(case["calls"])
    for got, want in zip(result["calls"], case["calls"], strict=True):
        assert (got["name"], got["arguments"]) == (want["name"], want["arguments"])
        if want["error"] is None:
            assert got["error"] == ""
            assert isinstance(json.loads(got["arguments"]), dict)
        else:
            assert want["error"] in got["error"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_any_split_gives_the_same_result(name):
    case, text = CASES[name], _sample(name)
    whole = _parse(case, [text])
    for cut in range(1, len(text)):
        assert _parse(case, [text[:cut], text[cut:]]) == whole, f"split at {cut}: {text[:cut]!r} | {text[cut:]!r}"
    assert _parse(case, list(text)) == whole, "one character at a time"


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_chunkings_give_the_same_result(name):
    case, text = CASES[name], _sample(name)
    whole = _parse(case, [text])
    rng = random.Random(name)  # fixed per sample: reproducible
    for _ in range(20):
        chunks, pos = [], 0
        while pos < len(text):
            size = rng.randint(1, 8)
            chunks.append(text[pos:pos + size])
            pos += size
        assert _parse(case, chunks) == whole, chunks
