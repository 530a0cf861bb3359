"""Kept only for ``trtllm_gateway/conversations.py``'s import of :func:`plain_key`; the codec
is ``codec.py``. Delete this module once that import reads ``from .store.codec``."""
from .codec import plain_key

__all__ = ["plain_key"]
