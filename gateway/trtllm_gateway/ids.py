"""Object ids: ``<prefix>_<48 hex>``, the shape of OpenAI's ids (``resp_…``, ``msg_…``,
``rs_…``, ``fc_…``, ``call_…``). Random, so ids never collide across gateway replicas."""
from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(24).hex()}"
