"""Mirrors tensorrt_llm/executor/result.py: CompletionOutput, GenerationResult, IterationResult.

What is mirrored, and why it matters to the adapter:
- `CompletionOutput` is mutated in place; `token_ids_diff`/`logprobs_diff`/`text_diff` are
  slices from `_last_*_len`, which `_handle_response` sets before appending each response.
- On a final response: END_ID -> 'stop' (the end id is not in token_ids); STOP_WORDS ->
  'stop', `stop_reason` = the stop token id, and the stop ids are cut from `token_ids` but
  NOT from `logprobs` (upstream `_handle_sequence` does the same); LENGTH -> 'length';
  TIMED_OUT -> 'timeout'; CANCELLED -> 'cancelled' (set on any response that carries it).
- A per-request error arrives as a response with an error message and is raised as
  `RequestError` from `__anext__` (upstream: `_handle_background_error(str)`).
- `abort()` asks the executor to cancel; the request then ends with 'cancelled'.
- `IterationResult`: one per executor; `__anext__` waits `timeout` seconds for the next
  stats dict, then marks itself done until a new request is submitted (`mark_undone`).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .utils import RequestError


@dataclass(slots=True)
class Logprob:
    logprob: float
    rank: int | None = None


TokenLogprobs = list  # list[dict[int, Logprob]]


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] | None = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: TokenLogprobs | list[float] | None = field(default_factory=list)
    prompt_logprobs: TokenLogprobs | None = field(default_factory=list)
    finish_reason: Literal["stop", "length", "timeout", "cancelled"] | None = None
    stop_reason: int | str | None = None
    generation_logits: Any | None = None
    additional_context_outputs: dict[str, Any] | None = None
    additional_generation_outputs: dict[str, Any] | None = None
    disaggregated_params: Any | None = None
    request_perf_metrics: Any | None = None
    _last_text_len: int = field(default=0, init=False, repr=False)
    _last_token_ids_len: int = field(default=0, init=False, repr=False)
    _last_logprobs_len: int = field(default=0, init=False, repr=False)
    _incremental_states: dict | None = field(default=None, init=False, repr=False)
    _postprocess_result: Any = None

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len:]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len:]

    @property
    def logprobs_diff(self):
        return self.logprobs[self._last_logprobs_len:]


@dataclass
class _Response:
    """What the fake scheduler sends per step (upstream: an LlmResponse / ErrorResponse)."""

    client_id: int
    token_ids: list[int]
    logprobs: list | None = None
    finish: str | None = None  # END_ID | STOP_WORDS | LENGTH | TIMED_OUT | CANCELLED
    is_final: bool = False
    error_msg: str | None = None  # a per-request failure: raised as RequestError
    fatal_msg: str | None = None  # the executor died: raised as RuntimeError
    cached_tokens: int = 0


_FINAL_REASONS = {"END_ID": "stop", "STOP_WORDS": "stop", "LENGTH": "length", "TIMED_OUT": "timeout"}


class GenerationResult:
    """One request's result; created on the event-loop thread, fed by the scheduler thread."""

    def __init__(self, request_id: int, prompt_token_ids: list[int], sampling_params, executor,
                 streaming: bool, tokenizer=None) -> None:
        self._request_id = request_id
        self._prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = sampling_params
        self._executor = executor
        self._streaming = streaming
        self.tokenizer = tokenizer
        self._outputs = [CompletionOutput(0)]
        self._done = False
        self._aborted = False
        self.cached_tokens = 0
        self.decoding_iter = 0
        # upstream requires a running loop here (AsyncQueue); so does the fake
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Response] = asyncio.Queue()

    # -- fed from the scheduler thread ------------------------------------------------
    def _deliver(self, response: _Response) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, response)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    # -- mirrors _handle_response/_handle_sequence --------------------------------------
    def _handle_response(self, response: _Response) -> None:
        if response.error_msg is not None:
            self._done = True
            raise RequestError(response.error_msg)
        if response.fatal_msg is not None:
            self._done = True
            raise RuntimeError(response.fatal_msg)
        self._done = response.is_final
        self.cached_tokens = response.cached_tokens
        self.decoding_iter += 1
        out = self._outputs[0]
        out._last_token_ids_len = len(out.token_ids)
        out.token_ids.extend(response.token_ids)
        if response.logprobs is not None:
            out._last_logprobs_len = len(out.logprobs)
            out.logprobs += response.logprobs
        if response.finish == "CANCELLED":
            out.finish_reason = "cancelled"
        if self._done and response.finish in _FINAL_REASONS:
            out.finish_reason = _FINAL_REASONS[response.finish]
            if response.finish == "STOP_WORDS":
                for reason, ids in self.sampling_params._get_stop_reasons_and_words():
                    if out.token_ids[-len(ids):] == ids:
                        out.stop_reason = reason
                        if not self.sampling_params.include_stop_str_in_output:
                            out.token_ids = out.token_ids[:-len(ids)]
                        break
        if self.sampling_params.detokenize and self.tokenizer is not None:
            out._last_text_len = len(out.text)
            out.text = self.tokenizer.decode(
                out.token_ids, skip_special_tokens=self.sampling_params.skip_special_tokens)

    async def _aresult_step(self) -> None:
        self._handle_response(await self._queue.get())

    # -- public surface -----------------------------------------------------------------
    @property
    def request_id(self) -> int:
        return self._request_id

    @property
    def prompt_token_ids(self) -> list[int]:
        return self._prompt_token_ids

    @property
    def outputs(self) -> list[CompletionOutput]:
        return self._outputs[: self.sampling_params.n]

    @property
    def finished(self) -> bool:
        return self._done

    def abort(self) -> None:
        assert self._executor is not None, "The executor is not set for this result."
        self._executor.abort_request(self.request_id)
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    async def aresult(self) -> GenerationResult:
        while not self._done:
            await self._aresult_step()
        return self

    def __await__(self):
        return self.aresult().__await__()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        await self._aresult_step()
        return self


class IterationResult:
    """Runtime stats for all available iterations (one shared instance per executor)."""

    MAX_QUEUED = 1000  # upstream drops the oldest entries when its queue is full

    def __init__(self) -> None:
        self._done = False
        self._timeout = 2
        self._loop = asyncio.get_running_loop()
        self.aqueue: asyncio.Queue[str] = asyncio.Queue()

    def set_timeout(self, timeout: float) -> None:
        self._timeout = timeout

    def mark_undone(self) -> None:
        self._done = False

    def _put_threadsafe(self, data: str) -> None:
        def put() -> None:
            while self.aqueue.qsize() >= self.MAX_QUEUED:
                self.aqueue.get_nowait()
            self.aqueue.put_nowait(data)
        try:
            self._loop.call_soon_threadsafe(put)
        except RuntimeError:
            pass

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        if self._done:
            raise StopAsyncIteration
        try:
            data = await asyncio.wait_for(self.aqueue.get(), timeout=self._timeout)
            return json.loads(data)
        except TimeoutError:
            self._done = True
            raise StopAsyncIteration from None
