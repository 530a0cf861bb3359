"""Output parsing: where model text becomes visible text, reasoning and tool calls.

The serving core pushes every detokenized, stop-filtered text delta through one
`OutputParser` per request (`create_parser`) and sends what comes out; the streaming
protocol a parser follows (hold-back, call pieces, ids, `ToolCallPiece.error`) is in
`base`. Parsers by name (`PARSERS`):

| name          | kind      | model families                                             |
|---------------|-----------|------------------------------------------------------------|
| `hermes`      | tools     | Hermes 2/3, Qwen2.5, Qwen3, QwQ; grammar-forced calls      |
| `llama3_json` | tools     | Llama 3.1, 3.2, 3.3 (JSON tool calling)                    |
| `mistral`     | tools     | Mistral / Mixtral (`[TOOL_CALLS]`, array and `[ARGS]` forms) |
| `think`       | reasoning | Qwen3, QwQ, DeepSeek-R1 (+ distills): `<think>…</think>`   |

`default_parsers(model_id, chat_template)` picks them for a model family.
"""
from __future__ import annotations

from .base import OutputParser, ParsedDelta, ToolCallPiece, new_call_id
from .reasoning import prompt_opens_reasoning
from .registry import (
    PARSERS,
    REASONING_PARSERS,
    TOOL_PARSERS,
    ComposedParser,
    create_parser,
    default_parsers,
)

__all__ = [
    "PARSERS", "REASONING_PARSERS", "TOOL_PARSERS", "ComposedParser", "OutputParser", "ParsedDelta",
    "ToolCallPiece", "create_parser", "default_parsers", "new_call_id",
    "prompt_opens_reasoning",
]
