"""Coalescing of a Generate stream: what the engine reader has produced and the gRPC writer
has not sent yet, merged into as few messages as the order of the output allows.

The pipeline reads the engine in a task that `put`s each step's output here; the writer
`take`s everything pending whenever it may send (grpc.aio pulls the handler's next message
only after the previous one was handed to the transport). A stream that keeps up gets one
message per engine step; one that falls behind (slow client, HTTP/2 flow control, a busy
event loop) gets the steps it missed as one Delta instead of a backlog of small messages,
which is where a gateway spends its per-event CPU.

Merge rule. A Delta's fields are read in the order reasoning, text, tool calls (the gateway
applies them so, and one engine step's output is in that order). Output joins the last
pending Delta only when that order is kept; reasoning after text or tool calls, or text
after tool calls, starts another Delta. Text and reasoning are concatenated, token ids and
logprobs appended, tool-call pieces kept in order, a piece that continues the previous
piece's call joined to it. Concatenating the merged Deltas' fields gives exactly what the
unmerged Deltas gave.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from trtllm_responses.inference.v1 import inference_pb2 as pb

from .parsing import ParsedDelta
from .parsing.base import ToolCallPiece


@dataclass
class _Pending:
    """One Delta being built (lists, joined once when it is sent)."""

    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallPiece] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)

    def accepts(self, parsed: ParsedDelta) -> bool:
        if parsed.reasoning and (self.text or self.tool_calls):
            return False
        return not (parsed.text and self.tool_calls)

    def add(self, parsed: ParsedDelta, token_ids: list[int], logprobs: list[pb.TokenLogprob]) -> None:
        if parsed.reasoning:
            self.reasoning.append(parsed.reasoning)
        if parsed.text:
            self.text.append(parsed.text)
        for piece in parsed.tool_calls:
            last = self.tool_calls[-1] if self.tool_calls else None
            if last is not None and last.index == piece.index and not (last.error or piece.id or piece.name):
                self.tool_calls[-1] = ToolCallPiece(last.index, last.id, last.name,
                                                    last.arguments_delta + piece.arguments_delta, piece.error)
            else:
                self.tool_calls.append(piece)
        self.token_ids.extend(token_ids)
        self.logprobs.extend(logprobs)

    def message(self) -> pb.GenerateResponse:
        delta = pb.Delta(text="".join(self.text), reasoning_text="".join(self.reasoning),
                         token_ids=self.token_ids, logprobs=self.logprobs)
        for piece in self.tool_calls:
            delta.tool_calls.add(index=piece.index, id=piece.id, name=piece.name,
                                 arguments_delta=piece.arguments_delta, error=piece.error)
        return pb.GenerateResponse(delta=delta)


class Outbox:
    """Between one request's engine reader (`put`, `close`, `fail`) and its writer (`take`).

    ``interval`` (the service's ``--stream-interval``): once a message with output has gone,
    the next waits until the request's token count reaches the next multiple of it, which is
    the rule of TensorRT-LLM's PyTorch executor for its ``stream_interval`` (responses on the
    first iteration, then the Nth, 2Nth...): an executor that already streams so is relayed
    without delay. The first output and the end always go at once. 1: every step as it comes."""

    def __init__(self, interval: int = 1) -> None:
        self._pending: list[_Pending] = []
        self._final: pb.GenerateResponse | None = None
        self._failure: BaseException | None = None
        self._wake = asyncio.Event()
        self.closed = False  # the writer has taken the Final (or the failure)
        self.interval = max(1, interval)
        self._total = 0  # tokens (or steps without ids) put so far
        self._mark = 0  # `_total` when the writer last took
        self._shown = False  # output went out: later messages wait for the next multiple of `interval`

    def put(self, parsed: ParsedDelta, token_ids: list[int], logprobs: list[pb.TokenLogprob]) -> None:
        """One step's output (a Delta's worth, possibly empty with `token_ids` to send)."""
        if not self._pending or not self._pending[-1].accepts(parsed):
            self._pending.append(_Pending())
        self._pending[-1].add(parsed, token_ids, logprobs)
        self._total += max(len(token_ids), 1)
        if self._ready():
            self._wake.set()

    def _ready(self) -> bool:
        if self._final is not None or self._failure is not None:
            return True
        return bool(self._pending) and (not self._shown or self._total // self.interval > self._mark // self.interval)

    def close(self, final: pb.GenerateResponse) -> None:
        """The stream's last message, sent after everything pending."""
        self._final = final
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """The reader failed: the writer raises `exc` once what is pending has been sent."""
        self._failure = exc
        self._wake.set()

    async def take(self) -> list[pb.GenerateResponse]:
        """Waits for output; returns the pending messages (the Final last once the stream
        ended), or raises the reader's failure."""
        while not self._ready():
            self._wake.clear()
            await self._wake.wait()
        self._shown = self._shown or any(pending.reasoning or pending.text or pending.tool_calls
                                         for pending in self._pending)
        messages = [pending.message() for pending in self._pending]
        self._pending, self._mark = [], self._total
        if self._failure is not None and not messages:
            self.closed = True
            raise self._failure
        if self._final is not None and self._failure is None:
            messages.append(self._final)
            self.closed = True
        return messages
