"""`<think>…</think>` reasoning (Qwen3, QwQ, DeepSeek-R1 and its distills, SmolLM3).

The model writes its reasoning between `<think>` and `</think>`, then the answer. Only a
`<think>` at the very start of the output (after whitespace) opens reasoning, so an answer
that merely mentions the tag stays visible. DeepSeek-R1-style templates already put
`<think>` at the end of the prompt: then the output starts inside the reasoning
(`starts_in_reasoning=True`; `prompt_opens_reasoning(prompt)` tells which case applies),
and everything up to `</think>` is reasoning; without a `</think>` all of it is.

Whitespace right inside the tags and right after `</think>` is formatting and dropped.
"""
from __future__ import annotations

from .base import OutputParser, ParsedDelta, match_literal, split_before_marker

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_reasoning(prompt: str, open_tag: str = OPEN) -> bool:
    """True when the rendered prompt ends inside an opened reasoning block."""
    return prompt.rstrip().endswith(open_tag)


class ThinkReasoningParser(OutputParser):
    supports_reasoning = True
    open_tag, close_tag = OPEN, CLOSE

    def __init__(self, starts_in_reasoning: bool = False) -> None:
        self._state = "reasoning" if starts_in_reasoning else "start"
        self._buf = ""
        self._lstrip = True  # at the start of the reasoning, or of the answer after it
        self._out = ParsedDelta()

    def feed(self, text: str) -> ParsedDelta:
        self._out = ParsedDelta()
        self._buf += text
        while getattr(self, "_state_" + self._state)():
            pass
        return self._out

    def finish(self) -> ParsedDelta:
        self._out = ParsedDelta()
        if self._state == "reasoning":
            self._out.reasoning = self._buf.rstrip()
        elif self._state == "start":
            self._out.text = self._buf
        self._buf = ""
        self._state = "visible"
        return self._out

    def _state_start(self) -> bool:
        body = self._buf.lstrip()
        if not body:
            return False
        opened = match_literal(body, self.open_tag)
        if opened is None:
            return False
        if opened:
            self._buf = body[len(self.open_tag):]
            self._state, self._lstrip = "reasoning", True
        else:
            self._state, self._lstrip = "visible", False
        return True

    def _state_reasoning(self) -> bool:
        if self._lstrip:
            self._buf = self._buf.lstrip()
        if not self._buf:
            return False
        before, after, held = split_before_marker(self._buf, self.close_tag)
        if before:
            self._out.reasoning += before
            self._lstrip = False
        if after is None:
            self._buf = held
            return False
        self._buf = after
        self._state, self._lstrip = "visible", True
        return True

    def _state_visible(self) -> bool:
        text, self._buf = self._buf, ""
        if self._lstrip:
            text = text.lstrip()
            self._lstrip = not text
        self._out.text += text
        return False
