"""What the simulator engine says: a request's output as token ids, built without a model.

A script is, in order (each part optional):
1. reasoning: `--sim-reasoning-tokens` tokens of filler inside the markup of the request's
   reasoning parser (`OutputSyntax.reasoning_parser`, e.g. `<think>` ... `</think>`; the
   opening tag is left out when the prompt already opened the block). Without a reasoning
   parser there is no reasoning markup the service would read, so none is written;
2. the answer: `--sim-output-tokens` tokens of filler text, or, with `--sim-tool-calls` and a
   request that offers tools, one call of the first offered function in the tool parser's
   syntax (`guided.FORMATS`: the markup forced tool calls use, which the parsers read), with
   `minimal_instance` of its parameters schema as arguments.
Filler is words of a fixed English passage (each tokenized once, with its leading space)
drawn by the request's random generator, which is seeded by the request's seed (or 0 for
greedy sampling), so seeded and greedy requests are deterministic.
"""
from __future__ import annotations

import json
import random
from typing import Any

from ..guided import FORMATS
from ..parsing.registry import REASONING_PARSERS
from .base import OutputSyntax, SamplingConfig

PASSAGE = (
    "The simulator streams this passage instead of a model's answer, so that every part of a deployment "
    "above the engine can be measured without a GPU. Tokens arrive at a steady rate after a fixed delay, "
    "the way a busy server would send them. Bread was first baked from wild grains ground between stones, "
    "and rainbows form when sunlight is bent and reflected inside drops of rain. A good cup of tea needs "
    "fresh water, the right temperature and a little patience. Autumn leaves turn red and gold as the days "
    "grow shorter and the nights grow cold. "
)


def rng_for(sampling: SamplingConfig) -> random.Random:
    """The request's generator: its seed; 0 for greedy (temperature 0); else unseeded."""
    if sampling.seed is not None:
        return random.Random(sampling.seed)
    if sampling.temperature == 0:
        return random.Random(0)
    return random.Random()


class ScriptWriter:
    """Builds scripts over one tokenizer; encodings of markup are cached."""

    def __init__(self, tokenizer: Any, reasoning_tokens: int, output_tokens: int, tool_calls: bool) -> None:
        self.tokenizer = tokenizer
        self.reasoning_tokens = reasoning_tokens
        self.output_tokens = output_tokens
        self.tool_calls = tool_calls
        self.words: list[list[int]] = [self.encode(" " + word) for word in dict.fromkeys(PASSAGE.split())]
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _markup(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self.encode(text)
        return ids

    def filler(self, rng: random.Random, n: int) -> list[int]:
        """`n` tokens of words drawn at random from the passage (the last one cut to fit)."""
        ids: list[int] = []
        while len(ids) < n:
            ids.extend(rng.choice(self.words))
        return ids[:n]

    def script(self, syntax: OutputSyntax, rng: random.Random) -> list[int]:
        """The output's token ids before the end of sequence."""
        reasoning = self._reasoning(syntax, rng)
        if self.tool_calls and syntax.tools and syntax.tool_parser in FORMATS:
            answer = self._markup(call_text(syntax.tool_parser, *syntax.tools[0]))
        else:
            answer = self.filler(rng, self.output_tokens)
        return reasoning + answer

    def _reasoning(self, syntax: OutputSyntax, rng: random.Random) -> list[int]:
        parser = REASONING_PARSERS.get(syntax.reasoning_parser or "")
        open_tag, close_tag = getattr(parser, "open_tag", None), getattr(parser, "close_tag", None)
        if not (open_tag and close_tag) or self.reasoning_tokens <= 0:
            return []  # no parser (or one without tags) would read reasoning out of the text
        opening = [] if syntax.starts_in_reasoning else self._markup(open_tag + "\n")
        closing = self._markup("\n" + close_tag + "\n\n")
        return opening + self.filler(rng, self.reasoning_tokens) + closing


def call_text(tool_parser: str, name: str, parameters_json: str) -> str:
    """One call of `name` in the parser's syntax, arguments a minimal instance of its schema."""
    fmt = FORMATS[tool_parser]
    try:
        schema = json.loads(parameters_json) if parameters_json.strip() else {}
    except ValueError:
        schema = {}
    arguments = minimal_instance(schema) if isinstance(schema, dict) else {}
    if not isinstance(arguments, dict):
        arguments = {}
    return fmt.open + json.dumps({"name": name, fmt.args_key: arguments}) + fmt.close


_SCALARS: dict[str, Any] = {"boolean": False, "null": None}


def minimal_instance(schema: dict, depth: int = 0) -> Any:
    """A small value that satisfies common schemas: `const`, the first `enum` value, the first
    `anyOf`/`oneOf` branch, required properties only, `minItems` copies, bounds of numbers
    and lengths of strings. `pattern`, `format` and `$ref` are not honoured."""
    if depth > 16 or not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return minimal_instance(schema[key][0], depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "null")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: minimal_instance(props.get(name, {}), depth + 1) for name in schema.get("required", ())}
    if kind == "array":
        return [minimal_instance(schema.get("items") or {}, depth + 1)] * int(schema.get("minItems", 0))
    if kind == "string":
        return "sim"[:int(schema.get("maxLength", 3))].ljust(int(schema.get("minLength", 0)), "m")
    if kind in ("integer", "number"):
        return _number(schema, kind)
    return _SCALARS.get(kind)


def _number(schema: dict, kind: str) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 0
    if isinstance(low, (int, float)) and not isinstance(low, bool):
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    elif isinstance(high, (int, float)) and not isinstance(high, bool) and high <= 0:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return int(value) if kind == "integer" else value
