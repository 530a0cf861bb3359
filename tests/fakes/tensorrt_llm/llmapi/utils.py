"""Mirrors tensorrt_llm/llmapi/utils.py: get_device_count (upstream: torch.cuda.device_count()
when CUDA is available, else 0). The fake reports TRTLLM_FAKE_DEVICE_COUNT (default 1)."""
from .. import _fake


def get_device_count() -> int:
    return _fake.device_count()
