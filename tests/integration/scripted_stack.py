"""A whole stack over the scripted engine, for the conversation, WebSocket, compaction and
idempotency tests: the real tokenizer, service (gRPC server, pipeline, parsers), gateway
and SQLite store; only the model's words come from a script.

``start_stack(tokenizer, tmp_dir, reply)``: ``reply(prompt_text) -> str`` decides what the
"model" says for a templated prompt; every prompt the engine saw is kept in
``stack.prompts`` (decoded), so a test can check what reached the model.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fixtures.gateway import GatewayHandle, start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process


@dataclass
class Stack:
    handle: GatewayHandle
    engine: ScriptedEngine
    server: object
    runner: object
    prompts: list[str] = field(default_factory=list)

    async def stop(self) -> None:
        await self.handle.client.close()
        await self.runner.cleanup()
        await self.server.stop()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the engine runs nothing (an aborted request frees its slot)."""
        deadline = time.monotonic() + timeout
        while self.engine.load().running:
            assert time.monotonic() < deadline, "the engine request was not aborted"
            await asyncio.sleep(0.02)

    async def wait_running(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.engine.load().running:
            assert time.monotonic() < deadline, "the engine never started the request"
            await asyncio.sleep(0.01)


async def start_stack(tokenizer, tmp_dir, reply: Callable[[str], str], *, step_delay: float = 0.0,
                      context: int = 8192, **gateway_overrides) -> Stack:
    prompts: list[str] = []

    def script(prompt_ids: list[int]) -> str:
        prompt = tokenizer.decode(prompt_ids)
        prompts.append(prompt)
        return reply(prompt)

    engine = ScriptedEngine(tokenizer, script, model_id="scripted-model", context=context, step_delay=step_delay)
    server = await serve_in_process(engine)
    handle, runner = await start_gateway(server.address, tmp_dir, **gateway_overrides)
    return Stack(handle, engine, server, runner, prompts)
