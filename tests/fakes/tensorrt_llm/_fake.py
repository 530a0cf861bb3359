"""Test-only controls of the fake; upstream has no such module.

Environment variables (read when an LLM is built, so subprocess tests can set them):
- TRTLLM_FAKE_DEVICE_COUNT: GPUs the fake reports (default 1; 0 simulates a CPU-only host).
- TRTLLM_FAKE_STEP_S: seconds between scheduler iterations (default 0.002).

`CONTROLS` lets in-process tests inject faults and observe what the adapter sent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Controls:
    device_count: int | None = None  # overrides TRTLLM_FAKE_DEVICE_COUNT when set
    step_s: float | None = None  # overrides TRTLLM_FAKE_STEP_S when set
    # The next request gets a per-request error (RequestError) after this many tokens.
    fail_after_tokens: int | None = None
    # The scheduler dies (a non-request error, the executor shuts down) after this many tokens.
    die_after_tokens: int | None = None
    # Every LLM(...) call's kwargs and every submitted SamplingParams, newest last.
    llm_kwargs: list[dict[str, Any]] = field(default_factory=list)
    sampling_params: list[Any] = field(default_factory=list)
    aborted_ids: list[int] = field(default_factory=list)


CONTROLS = Controls()


def reset() -> None:
    """Forget injected faults and recorded calls."""
    fresh = Controls()
    for name in fresh.__dataclass_fields__:
        setattr(CONTROLS, name, getattr(fresh, name))


def device_count() -> int:
    if CONTROLS.device_count is not None:
        return CONTROLS.device_count
    return int(os.environ.get("TRTLLM_FAKE_DEVICE_COUNT", "1"))


def step_s() -> float:
    if CONTROLS.step_s is not None:
        return CONTROLS.step_s
    return float(os.environ.get("TRTLLM_FAKE_STEP_S", "0.002"))
