"""The stack the fuzz tests hit, and what every one of its answers must satisfy.

``LiveStack`` runs the real gateway (``http_server.make_runner``, port 0, SQLite store, API
keys on) over the real gRPC service server with a scripted engine that answers "ok", all
on an event loop of its own in a background thread, so synchronous clients (schemathesis,
``requests``) can call it while the test blocks.

``Recorder`` checks each answer: no 5xx, every non-2xx body in the OpenAI envelope, and no
log record with a traceback (or at ERROR level from the gateway) while the case ran. It
counts statuses for the session summary (``conftest.py``).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from concurrent.futures import Future

import requests

from tests.fixtures.gateway import start_gateway
from tests.fixtures.scripted_engine import ScriptedEngine
from tests.fixtures.service import serve_in_process

API_KEY = "sk-fuzz"
REQUEST_TIMEOUT_S = (10, 30)  # (connect, read): a case that waits longer than this is a hang
ENVELOPE_KEYS = {"message", "type", "param", "code"}


class LiveStack:
    def __init__(self, tokenizer, tmp_dir) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-stack", daemon=True)
        self.thread.start()
        self._tokenizer, self._tmp = tokenizer, tmp_dir
        self.server = self.handle = self.runner = None
        self.run(self._start())

    def run(self, coro, timeout: float = 120):
        """Run ``coro`` on the stack's loop and wait for its result."""
        future: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def _start(self) -> None:
        self.server = await serve_in_process(ScriptedEngine(self._tokenizer, "ok", model_id="fuzz-model"))
        self.handle, self.runner = await start_gateway(self.server.address, self._tmp, api_keys=(API_KEY,),
                                                       header_timeout_s=5, body_timeout_s=5)

    async def _stop(self) -> None:
        await self.handle.client.close()
        await self.runner.cleanup()
        await self.server.stop()

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)

    @property
    def root(self) -> str:
        return self.handle.root

    @property
    def base_url(self) -> str:
        return self.handle.base_url

    @property
    def port(self) -> int:
        return int(self.root.rsplit(":", 1)[1])


class _Capture(logging.Handler):
    """Keeps the records that would betray a server-side failure."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        own_error = record.name.startswith(("trtllm_gateway", "trtllm_service")) and record.levelno >= logging.ERROR
        if record.exc_info or "Traceback" in text or own_error:
            exc = record.exc_info[1] if record.exc_info else None
            self.bad.append(f"{record.levelname} {record.name}: {text[:300]}"
                            + (f" [{type(exc).__name__}: {str(exc)[:200]}]" if exc is not None else ""))


class Recorder:
    """Checks answers and counts them (status histogram over the session)."""

    def __init__(self) -> None:
        self.statuses: collections.Counter = collections.Counter()
        self.capture = _Capture()
        logging.getLogger().addHandler(self.capture)

    def close(self) -> None:
        logging.getLogger().removeHandler(self.capture)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def check(self, status: int, body: bytes, content_type: str, what: str) -> None:
        self.statuses[status] += 1
        bad, self.capture.bad = self.capture.bad, []  # taken first: a failed check must not leave them
        assert status < 500, f"{what}: {status} {body[:500]!r}\n" + "\n".join(bad[:10])
        assert not bad, f"{what}: the server logged a failure:\n" + "\n".join(bad[:10])
        if status >= 300 and status != 304:
            assert content_type.startswith("application/json"), f"{what}: {status} {content_type} {body[:300]!r}"
            parsed = json.loads(body)
            assert set(parsed) == {"error"} and set(parsed["error"]) == ENVELOPE_KEYS, f"{what}: {parsed}"
            assert isinstance(parsed["error"]["message"], str) and "Traceback" not in parsed["error"]["message"]

    def check_response(self, response: requests.Response, what: str) -> None:
        self.check(response.status_code, response.content, response.headers.get("Content-Type", ""), what)



def session() -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {API_KEY}"
    return s
