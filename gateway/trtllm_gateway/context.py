"""Shared state of one gateway app, found by handlers on ``app[GATEWAY]``."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .auth import TENANT, Authenticator  # noqa: F401 - TENANT re-exported for handlers
from .metrics import GatewayMetrics
from .service_client import ServiceClient
from .settings import GatewaySettings
from .store import ResponseStore


@dataclass
class Gateway:
    """Shared state of one gateway app."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    auth: Authenticator
    store: ResponseStore
    service: ServiceClient | None = None
    background: set[asyncio.Task] = field(default_factory=set)
    purger: asyncio.Task | None = None
    streams: dict[Any, asyncio.Task] = field(default_factory=dict)  # driver.Stream -> its task (shutdown.py)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)  # open WebSockets (shutdown.py closes them)

    @property
    def client(self) -> ServiceClient:
        """The service client, for handlers: the app's startup sets it before any request is served."""
        if self.service is None:
            raise RuntimeError("the gateway has not started: no service client")
        return self.service

    def spawn(self, coro: Awaitable) -> None:
        """Run work that must outlive a cancelled handler (e.g. saving its final state)."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


GATEWAY = web.AppKey("gateway", Gateway)
ARRIVED = web.RequestKey("arrived", float)  # perf_counter() when the request arrived
