"""TensorRT-LLM engine: the `Engine` contract (base.py) over TensorRT-LLM's LLM API, 1.2.x.

Protocol, as this adapter uses it:
- Build. `tensorrt_llm` is imported here, lazily, in a worker thread, so the CPU engine
  never imports it. `--trtllm-backend pytorch` (default) uses `tensorrt_llm.llmapi.LLM` on
  an HF checkpoint directory or hub id; `tensorrt` uses `tensorrt_llm._tensorrt_engine.LLM`
  on a prebuilt engine directory. Construction (`LLM(model, tensor_parallel_size=...,
  kv_cache_config=KvCacheConfig(free_gpu_memory_fraction, enable_block_reuse),
  max_batch_size, max_num_tokens, max_seq_len, guided_decoding_backend)`) runs off the
  event loop. TensorRT-LLM spawns MPI workers, so the process entry point must sit behind
  `if __name__ == "__main__":`.
- Start failures raise `TrtllmUnavailable` with a one-line reason (tensorrt_llm missing or
  broken, no GPU visible, too few GPUs for --tensor-parallel-size, no/unsupported --model,
  load or warm-up failure). The service's main exits with code 2 and prints the message,
  not a traceback (`TrtllmUnavailable.exit_code`).
- Generate. `llm.generate_async({"prompt_token_ids": ids}, SamplingParams(...),
  streaming=True)` is called ON the event-loop thread (its result queue binds to the running
  loop) and the returned RequestOutput, mutated in place, is read with `async for`. Each
  pass becomes one TokenStep from `outputs[0].token_ids_diff` / `logprobs_diff`; our own
  sent-count guards against a diff that does not line up with `token_ids`.
  `max_tokens` is always set (TensorRT-LLM's default is 32) and `detokenize=False` (the
  service detokenises).
- Finish reasons: stop -> "stop", length -> "length", cancelled -> "cancelled".
  TensorRT-LLM drops the end id and stop token ids from `token_ids`; the final step names
  the id in `stop_token_id` (from `stop_reason`, else the request's end id).
  "timeout" (only with an executor-level time limit, which we never set) raises
  EngineError: the output was cut short by the runtime, which is neither "length" nor a
  client's "cancelled".
- Errors. `RequestError`/`ValueError`/`TypeError` raised while submitting, or before the
  first token, mean TensorRT-LLM refused the request: `EngineRejected` (INVALID_ARGUMENT).
  Any error after tokens were produced, and any other exception, is `EngineError` (INTERNAL).
- Cancellation. Closing the iterator or cancelling its task calls `RequestOutput.abort()`
  and drains the result until TensorRT-LLM reports it finished ("cancelled"), at most
  `abort_wait_s`.
- Load. One task (trtllm_stats.poll_stats) owns `llm.get_stats_async()`; `load()` reads
  its board. `health()` is True once the LLM is built and one tiny generation succeeded,
  and False after `stop()` or once TensorRT-LLM's executor has shut itself down.
- Tokenizer: the Hugging Face tokenizer TensorRT-LLM loaded (`llm.tokenizer.tokenizer`),
  so chat templates match the engine's vocabulary.

Upstream files read (NVIDIA/TensorRT-LLM, revisions of the 1.1/1.2 line: llm.py 4c05a748,
sampling_params.py a98a9061, executor/result.py a678b91a, serve/openai_server.py e7f7345e,
llmapi/llm_args.py, llmapi/tokenizer.py 89fd9b74, executor/executor.py ed53795b,
executor/utils.py 7b437aaa, _tensorrt_engine/__init__.py). Reference only; nothing copied.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import ServiceSettings
from .base import Engine, EngineError, EngineRejected, LoadInfo, SamplingConfig, TokenLogprobs, TokenStep
from .trtllm_api import (
    FINISH_REASONS,
    TrtllmApi,
    TrtllmUnavailable,
    check_model,
    context_length,
    guided_backend,
    llm_kwargs,
    load_api,
    sampling_params,
    to_logprobs,
)
from .trtllm_stats import StatsBoard, poll_stats

__all__ = ["TrtllmEngine", "TrtllmUnavailable"]

log = logging.getLogger(__name__)

@dataclass
class _Stream:
    """One request's progress through its RequestOutput."""

    result: Any
    params: Any
    top_n: int
    sent: int = 0  # tokens of outputs[0].token_ids already turned into steps
    start: int = 0  # where the latest step's tokens began
    produced: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self, eos_id: int | None) -> TokenStep | None:
        out = self.result.outputs[0]
        ids = self._new_ids(out)
        logprobs = self._new_logprobs(out, ids) if self.top_n >= 0 else None
        finish = self._finish(out) if self.result.finished else None
        if not ids and finish is None:
            return None
        self.produced = self.produced or bool(ids)
        step = TokenStep(token_ids=ids, logprobs=logprobs, finish_reason=finish)
        if finish is not None:
            step.cached_tokens = int(getattr(self.result, "cached_tokens", 0) or 0)
            if finish == "stop":
                reason = out.stop_reason
                step.stop_token_id = reason if isinstance(reason, int) else getattr(self.params, "end_id", eos_id)
        return step

    def _new_ids(self, out: Any) -> list[int]:
        diff, total = list(out.token_ids_diff), len(out.token_ids)
        if self.sent + len(diff) != total:  # the guard: trust our own count
            diff = list(out.token_ids[self.sent:]) if total > self.sent else []
        self.start, self.sent = self.sent, max(self.sent, total)
        return diff

    def _new_logprobs(self, out: Any, ids: list[int]) -> list[TokenLogprobs]:
        entries = list(out.logprobs_diff or [])
        if len(out.logprobs or []) - len(entries) != self.start:  # diff not aligned with ours
            entries = list((out.logprobs or [])[self.start:])
        return to_logprobs(ids, entries[: len(ids)], self.top_n)

    @staticmethod
    def _finish(out: Any) -> str:
        reason = out.finish_reason
        if reason in FINISH_REASONS:
            return FINISH_REASONS[reason]
        if reason == "timeout":
            raise EngineError("TensorRT-LLM timed out the request before it finished")
        raise EngineError(f"TensorRT-LLM ended the request with finish reason {reason!r}")


class TrtllmEngine(Engine):
    """TensorRT-LLM behind the Engine contract; see the module docstring."""

    name = "trtllm"
    supports_logprobs = True
    supports_guided = False  # set by start() from --guided-decoding-backend
    abort_wait_s = 5.0
    stats_timeout_s = 2.0
    stats_pause_s = 0.5

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.tokenizer: Any = None  # the Hugging Face tokenizer TensorRT-LLM loaded (untyped)
        self._api: TrtllmApi | None = None
        self._llm: Any = None
        self._ready = False
        self._streams: dict[str, _Stream] = {}
        self._board = StatsBoard(max_running=settings.max_batch_size)
        self._poller: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        model = check_model(self.settings)
        api, self._llm = await asyncio.to_thread(self._build, model)
        self._api = api
        hf_tokenizer = self._llm.tokenizer
        if hf_tokenizer is None:
            raise TrtllmUnavailable("TensorRT-LLM loaded no tokenizer; pass --tokenizer")
        self.tokenizer = getattr(hf_tokenizer, "tokenizer", hf_tokenizer)
        self.model_id = self.settings.served_model_name or (Path(model).name if Path(model).exists() else model)
        self.max_context_length = context_length(self._llm, self.settings, model)
        self.supports_guided = guided_backend(self.settings) is not None
        await self._warm_up(api)
        self._poller = asyncio.create_task(
            poll_stats(self._llm, self._board, lambda: len(self._streams), self._stopping,
                       self.stats_timeout_s, self.stats_pause_s), name="trtllm-stats")
        self._ready = True
        log.info("TensorRT-LLM engine ready: model=%s context=%d backend=%s", self.model_id,
                 self.max_context_length, self.settings.trtllm_backend)

    def _build(self, model: str) -> tuple[TrtllmApi, Any]:
        api = load_api(self.settings.trtllm_backend)
        visible, needed = api.device_count(), self.settings.tensor_parallel_size
        if visible == 0:
            raise TrtllmUnavailable("--engine trtllm needs an NVIDIA GPU and none is visible "
                                    "(check nvidia-smi, CUDA_VISIBLE_DEVICES and the container's --gpus)")
        if visible < needed:
            raise TrtllmUnavailable(f"--tensor-parallel-size {needed} needs {needed} GPUs; {visible} visible")
        try:
            return api, api.LLM(model, **llm_kwargs(api, self.settings))
        except Exception as exc:
            raise TrtllmUnavailable(f"TensorRT-LLM could not load {model!r}: {exc}") from exc

    async def _warm_up(self, api: TrtllmApi) -> None:
        ids = self.tokenizer.encode("Hello", add_special_tokens=False) or [self.tokenizer.eos_token_id or 0]
        try:
            params = api.SamplingParams(max_tokens=1, detokenize=False)
            await self._llm.generate_async({"prompt_token_ids": ids}, params).aresult()
        except Exception as exc:
            raise TrtllmUnavailable(f"TensorRT-LLM warm-up generation failed: {exc}") from exc

    async def stop(self) -> None:
        self._ready = False
        self._stopping.set()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller], timeout=self.stats_timeout_s + self.stats_pause_s)
            self._poller = None
        streams = list(self._streams.values())
        for stream in streams:
            _abort_quietly(stream.result)
        waits = [asyncio.ensure_future(s.ended.wait()) for s in streams]
        if waits:  # the streams end "cancelled" while their consumers keep reading
            await asyncio.wait(waits, timeout=self.abort_wait_s)
            for w in waits:
                w.cancel()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)

    def health(self) -> bool:
        if not self._ready or self._llm is None:
            return False
        executor = getattr(self._llm, "_executor", None)  # upstream generate_async checks the same
        return executor is not None and not executor.is_shutdown()

    def load(self) -> LoadInfo:
        return self._board.snapshot()

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       sampling: SamplingConfig) -> AsyncGenerator[TokenStep, None]:
        stream = self._submit(prompt_token_ids, sampling)
        self._streams[request_id] = stream
        finished = failed = False
        eos_id = getattr(self.tokenizer, "eos_token_id", None)
        try:
            async for _ in stream.result:
                step = stream.step(eos_id)
                if step is not None:
                    finished = step.finish_reason is not None
                    yield step
            if not finished:
                raise EngineError("TensorRT-LLM ended the stream without a finish reason")
        except (EngineError, EngineRejected):
            failed = True
            raise
        except Exception as exc:
            failed = True
            raise self._classify(exc, stream.produced) from exc
        finally:
            if self._streams.get(request_id) is stream:
                del self._streams[request_id]
            if not finished and not failed:
                await self._cancel(stream)
            stream.ended.set()

    def _submit(self, prompt_token_ids: list[int], sampling: SamplingConfig) -> _Stream:
        if not self._ready or self._api is None:
            raise EngineError("the TensorRT-LLM engine is not running")
        try:
            params = sampling_params(self._api, sampling)
            result = self._llm.generate_async({"prompt_token_ids": list(prompt_token_ids)}, params,
                                              streaming=True)
        except Exception as exc:
            raise self._classify(exc, produced=False) from exc
        top_n = -1 if sampling.logprobs is None else sampling.logprobs
        return _Stream(result=result, params=params, top_n=top_n)

    def _classify(self, exc: BaseException, produced: bool) -> Exception:
        rejected = (self._api.RequestError, ValueError, TypeError) if self._api else (ValueError, TypeError)
        if isinstance(exc, rejected) and not produced:
            return EngineRejected(f"TensorRT-LLM rejected the request: {exc}")
        return EngineError(f"TensorRT-LLM failed while serving the request: {exc}")

    async def _cancel(self, stream: _Stream) -> None:
        """Abort, then read the result until TensorRT-LLM says it is finished (bounded)."""
        _abort_quietly(stream.result)

        async def drain() -> None:
            async for _ in stream.result:
                pass

        try:
            await asyncio.wait_for(drain(), self.abort_wait_s)
        except TimeoutError:
            log.warning("TensorRT-LLM did not confirm an abort within %.1fs", self.abort_wait_s)
        except Exception:  # the request is being dropped; its late errors do not matter
            log.debug("error while draining an aborted request", exc_info=True)


def _abort_quietly(result: Any) -> None:
    if getattr(result, "finished", False):
        return
    try:
        result.abort()
    except Exception:
        log.warning("RequestOutput.abort() failed", exc_info=True)
