"""Optional API-key authentication and tenant derivation.

Protocol: ``Authorization: Bearer <key>`` (OpenAI's scheme). With no keys configured,
auth is off and every request belongs to tenant ``""``. With keys, a missing or unknown key
is a 401 ``authentication_error``; the key is compared against every configured key with
``hmac.compare_digest`` (constant time, no early exit). The tenant is a hash of the key, so
stored responses are visible only to requests made with the same key, and the store never
holds a key itself. Liveness and readiness stay public (probes carry no keys).
``/metrics`` is public too unless ``--metrics-api-key`` is set: then it needs
``Authorization: Bearer <that key>`` (tenants' keys do not open it), since its series name
the inference replicas' addresses.
"""
from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from .errors import ApiError

TENANT = web.RequestKey("tenant", str)  # the API-key owner ("" when auth is off)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def tenant_of(key: bytes) -> str:
    return hashlib.sha256(b"trtllm-gateway-tenant:" + key).hexdigest()[:32]


METRICS_PATH = "/metrics"


def _presented(request: web.Request) -> bytes | None:
    """The bearer token's bytes, or None without one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    # aiohttp decodes header bytes that are not UTF-8 as surrogate escapes; encoding them
    # back the same way compares the bytes the client sent (a mismatch, so 401, never a 500).
    return token.strip().encode("utf-8", "surrogateescape")


class Authenticator:
    def __init__(self, keys: tuple[str, ...], metrics_key: str = "") -> None:
        self.keys = [k.encode() for k in keys]
        self.metrics_key = metrics_key.encode()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def tenant(self, request: web.Request) -> str:
        if not self.keys:
            return ""
        presented = _presented(request)
        if presented is None:
            raise ApiError("authentication", "Missing API key: send 'Authorization: Bearer <key>'.")
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(key, presented)
        if not matched:
            raise ApiError("authentication", "Incorrect API key provided.")
        return tenant_of(presented)

    def check_metrics(self, request: web.Request) -> None:
        if not self.metrics_key:
            return
        presented = _presented(request)
        if presented is None or not hmac.compare_digest(self.metrics_key, presented):
            raise ApiError("authentication", "GET /metrics needs 'Authorization: Bearer <the metrics key>'.")

    def middleware(self):
        @web.middleware
        async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
            if request.path == METRICS_PATH:
                self.check_metrics(request)
            request[TENANT] = "" if request.path in PUBLIC_PATHS else self.tenant(request)
            return await handler(request)
        return auth_middleware
