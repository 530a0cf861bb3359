"""Engine registry: `--engine NAME` picks the factory. Each module imports lazily so the
CPU engine never imports tensorrt_llm and vice versa (and the simulator neither)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Engine

if TYPE_CHECKING:
    from ..settings import ServiceSettings

# name -> "module:class"; the class takes the ServiceSettings.
ENGINES: dict[str, str] = {
    "cpu": "trtllm_service.engine.cpu:CpuEngine",
    "trtllm": "trtllm_service.engine.trtllm:TrtllmEngine",
    "sim": "trtllm_service.engine.sim:SimEngine",
}


def create_engine(settings: ServiceSettings) -> Engine:
    module_name, class_name = ENGINES[settings.engine].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings)
