"""A bare HTTP/1.1 client for the latency part of `bench_gateway.py --sim`.

What the gateway adds to TTFT is a fraction of a millisecond to a few; aiohttp's client
spends about 2 ms of its own on this class of machine between building a request and
handing the first body chunk to its caller (measured with CLOCK_MONOTONIC stamps on both
sides: 0.6 ms before the gateway sees the request, 1.4 ms after the gateway wrote the first
delta), which the direct gRPC path does not pay. Like wrk, this client writes a prebuilt
request on a kept-alive connection and scans the reply's bytes, so the difference between
the two paths is the gateway's (and the loopback hop's), not the client library's.
"""
from __future__ import annotations

import asyncio
import json
import time

DELTA = b"output_text.delta"
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body
TERMINAL = (b"response.completed", b"response.incomplete")


class RawConnections:
    """``size`` kept-alive connections to ``host:port``; ``sse()`` borrows one per request."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.idle: asyncio.Queue = asyncio.Queue()

    def request(self, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        return (f"POST /v1/responses HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.api_key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def _borrow(self):
        if self.idle.empty():
            return await asyncio.open_connection(self.host, self.port)
        return self.idle.get_nowait()

    async def sse(self, request: bytes, out, timed: bool = True) -> None:
        """One streamed create (``request`` from :meth:`request`); TTFT and gaps between reads
        that carry an ``output_text.delta``, into ``out`` (a Tally)."""
        reader, writer = await self._borrow()
        start = last = time.perf_counter()
        first, tail, head = True, b"", None
        writer.write(request)
        while not tail.endswith(END):
            chunk = await reader.read(65536)
            if not chunk:
                out.errors += 1
                writer.close()
                return
            head = head or chunk[:12]
            out.events += chunk.count(b"\n\n")
            if timed and DELTA in chunk:
                now = time.perf_counter()
                (out.ttft if first else out.gaps).append(now - (start if first else last))
                first, last = False, now
            tail = (tail + chunk)[-65536:]
        if not head.startswith(b"HTTP/1.1 200") or not any(t in tail for t in TERMINAL):
            out.errors += 1
        else:
            out.requests += 1
        self.idle.put_nowait((reader, writer))

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()
