"""The narrow engine interface every backend implements.

An engine turns prompt token ids into a stream of `TokenStep`s. It knows nothing of chat
templates, text, stop strings or parsers: the serving core (`pipeline.py`) owns those, so
the CPU engine and TensorRT-LLM behave the same above this line.

Contract:
- `generate(request_id, prompt_token_ids, sampling)` is an async iterator. Each step carries
  the token ids produced since the previous step (one or more) and, on the last step, a
  `finish_reason` of "stop" (end-of-sequence or a stop token id) or "length" (max_tokens).
- Closing the iterator early (the consumer stops, or the task is cancelled) aborts the
  engine request and frees its slot: implementations do that in a `finally` clause.
- `health()` is True once the engine can serve; `load()` reports queue and cache figures.
- Exactly one object owns the engine; the service creates it once and passes it around.
"""
from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field


class EngineError(Exception):
    """The engine failed while serving a request (maps to INTERNAL)."""


class EngineRejected(ValueError):
    """The engine refused a request as invalid (maps to INVALID_ARGUMENT); `param` names the
    request field at fault, when one is (sent to callers as x-error-param)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineUnavailable(RuntimeError):
    """The engine cannot run on this machine (missing package, no device); the service
    exits with code 2 and this message."""


class EngineOverloaded(Exception):
    """The engine's admission queue is full (maps to RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class GuidedDecoding:
    """A structured-output constraint, exactly one of the fields set."""

    json_schema: str | None = None  # JSON-encoded schema
    json_object: bool = False
    regex: str | None = None
    grammar: str | None = None  # EBNF, used for forced tool calls


@dataclass(frozen=True)
class OutputSyntax:
    """How the serving core will read a request's output: the markup its parsers expect and
    the functions the request offers. Engines that run a model ignore it (the prompt tells
    the model); the simulator engine, which has no model, writes its output in this syntax."""

    tools: tuple[tuple[str, str], ...] = ()  # offered functions (name, parameters JSON); empty: tools off
    tool_parser: str | None = None  # name of the tool-call parser reading the output
    reasoning_parser: str | None = None  # name of the reasoning parser, None: no reasoning markup
    starts_in_reasoning: bool = False  # the prompt already opened the reasoning block


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling for one request, already validated by the serving core.

    `max_tokens` is always set (the core fills it from the context budget)."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; 0: sampled token only; n: plus top-n
    guided: GuidedDecoding | None = None
    output: OutputSyntax = OutputSyntax()


@dataclass
class TokenLogprobs:
    """Log-probability of one generated token and its top alternatives (id, logprob)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TokenStep:
    """Tokens produced since the previous step."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | None
    stop_token_id: int | None = None  # which id ended generation, when known
    cached_tokens: int = 0  # prompt tokens served from a prefix cache
    queue_s: float | None = None  # time the request waited before the engine scheduled it (once; None: unknown)


@dataclass
class LoadInfo:
    queued: int = 0
    running: int = 0
    kv_cache_utilization: float = 0.0
    kv_cache_hit_rate: float = 0.0
    max_running: int = 0


class Engine(abc.ABC):
    """Base class of engines; see the module docstring for the contract."""

    name: str = "base"
    #: The Hugging Face tokenizer whose vocabulary the engine decodes with.
    tokenizer: object
    #: The served model id and its context length, set by `start()`.
    model_id: str = ""
    max_context_length: int = 0
    supports_logprobs: bool = True
    supports_guided: bool = False
    supports_images: bool = False

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model (off the event loop) and warm it up."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the engine; running requests end as cancelled."""

    @abc.abstractmethod
    def generate(
        self, request_id: str, prompt_token_ids: list[int], sampling: SamplingConfig
    ) -> AsyncGenerator[TokenStep, None]:
        """Stream the generation for one request (a generator: the pipeline ``aclose()``s it)."""

    @abc.abstractmethod
    def health(self) -> bool:
        """True while the engine can serve requests."""

    @abc.abstractmethod
    def load(self) -> LoadInfo:
        """Current queue, running and cache figures."""


def check_request(running: bool, prompt: list[int], sampling: SamplingConfig, request_id: str,
                  max_context_length: int, vocab_size: int) -> None:
    """What every engine refuses up front (EngineRejected): a request id already running, an
    empty prompt, no room for output, and token ids outside the vocabulary."""
    if running:
        raise EngineRejected(f"request id {request_id!r} is already running")
    if not prompt:
        raise EngineRejected("the prompt is empty")
    if sampling.max_tokens < 1:
        raise EngineRejected(f"max_tokens must be at least 1, got {sampling.max_tokens}")
    if len(prompt) + sampling.max_tokens > max_context_length:
        raise EngineRejected(f"prompt ({len(prompt)} tokens) plus max_tokens ({sampling.max_tokens}) exceeds "
                             f"the context length of {max_context_length}")
    for param, ids in (("prompt", prompt), ("stop_token_ids", sampling.stop_token_ids)):
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise EngineRejected(f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})", param)
