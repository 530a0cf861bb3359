"""Mirrors tensorrt_llm/llmapi/llm_args.py: KvCacheConfig (every field and default of the
upstream pydantic model, as a strict dataclass), the argument names each backend's LlmArgs
accepts (BaseLlmArgs + TorchLlmArgs / TrtLlmArgs), and the `args` object `LLM.args` exposes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(kw_only=True)
class KvCacheConfig:
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    max_attention_window: list[int] | None = None
    sink_token_length: int | None = None
    free_gpu_memory_fraction: float | None = 0.9
    host_cache_size: int | None = None
    onboard_blocks: bool = True
    cross_kv_cache_fraction: float | None = None
    secondary_offload_min_priority: int | None = None
    event_buffer_max_size: int = 0
    attention_dp_events_gather_period_ms: int = 5
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    dtype: str = "auto"
    mamba_ssm_cache_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    tokens_per_block: int = 32

    def __post_init__(self) -> None:
        # upstream field_validator('free_gpu_memory_fraction'); pydantic's ValidationError is a ValueError
        if self.free_gpu_memory_fraction is not None and not 0 <= self.free_gpu_memory_fraction <= 1:
            raise ValueError("kv_cache_config.free_gpu_memory_fraction must be a float between 0 and 1")
        if self.max_gpu_total_bytes < 0:
            raise ValueError("kv_cache_config.max_gpu_total_bytes must be non-negative")


BASE_FIELDS = frozenset("""
model tokenizer tokenizer_mode skip_tokenizer_init trust_remote_code tensor_parallel_size dtype
revision tokenizer_revision pipeline_parallel_size context_parallel_size gpus_per_node
moe_cluster_parallel_size moe_tensor_parallel_size moe_expert_parallel_size enable_attention_dp
enable_lm_head_tp_in_adp cp_config load_format fail_fast_on_attention_window_too_large enable_lora
lora_config kv_cache_config enable_chunked_prefill guided_decoding_backend batched_logits_processor
iter_stats_max_iterations request_stats_max_iterations peft_cache_config scheduler_config
cache_transceiver_config sparse_attention_config speculative_config max_batch_size max_input_len
max_seq_len max_beam_width max_num_tokens gather_generation_logits num_postprocess_workers
postprocess_tokenizer_dir reasoning_parser decoding_config mpi_session backend return_perf_metrics
orchestrator_type build_config
""".split())

TORCH_ONLY_FIELDS = frozenset("""
garbage_collection_gen0_threshold cuda_graph_config attention_dp_config disable_overlap_scheduler
moe_config attn_backend sampler_type enable_iter_perf_stats enable_iter_req_stats print_iter_log
perf_metrics_max_requests batch_wait_timeout_ms batch_wait_timeout_iters batch_wait_max_tokens_ratio
torch_compile_config enable_autotuner enable_layerwise_nvtx_marker enable_min_latency stream_interval
force_dynamic_quantization allreduce_strategy checkpoint_loader checkpoint_format kv_connector_config
mm_encoder_only ray_worker_extension_cls
""".split())

TRT_ONLY_FIELDS = frozenset("""
workspace fast_build enable_build_cache calib_config extended_runtime_perf_knob_config batching_type
normalize_log_probs enable_prompt_adapter max_prompt_adapter_token embedding_parallel_mode enable_tqdm
""".split())

GUIDED_BACKENDS = {"pytorch": (None, "xgrammar", "llguidance"), None: (None, "xgrammar")}


@dataclass
class FakeLlmArgs:
    """The attributes of upstream's TorchLlmArgs/TrtLlmArgs that callers read."""

    model: str | Path
    backend: str | None
    tensor_parallel_size: int = 1
    max_batch_size: int | None = None  # upstream: 2048 when unset
    max_num_tokens: int | None = None  # upstream default: 8192
    max_seq_len: int | None = None
    kv_cache_config: KvCacheConfig = field(default_factory=KvCacheConfig)
    enable_chunked_prefill: bool = False
    guided_decoding_backend: str | None = None
    enable_iter_perf_stats: bool = False
    trust_remote_code: bool = False
    return_perf_metrics: bool = False
    num_postprocess_workers: int = 0
    reasoning_parser: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
