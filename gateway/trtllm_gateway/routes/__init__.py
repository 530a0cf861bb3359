"""HTTP route handlers, one module per resource; each handler only wires parsing, the
domain call and the reply (the work lives in ``generation.py``, ``translate.py``, the store)."""
from __future__ import annotations

from ..errors import ApiError


def limit_param(raw: str | None) -> int:
    """A list route's ``?limit=`` (default 20); the range is checked with the page arguments."""
    if raw is None:
        return 20
    try:
        return int(raw)
    except ValueError:
        raise ApiError("invalid_request", "Invalid 'limit': expected an integer in 1..100.", param="limit") from None
