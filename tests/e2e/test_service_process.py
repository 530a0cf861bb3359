"""The service as a real process (`trtllm-responses-service`, CPU engine, default model).

SIGTERM drains: the running stream finishes in full, the process exits 0 and logs the
request. SIGKILL mid-stream: the gateway's client gets ``response.failed`` (server_error)
with the partial text kept, and the stored response is failed too.
"""
from __future__ import annotations

import asyncio
import signal

import aiohttp
import grpc
import pytest

from tests.fixtures.gateway import check_stream, parse_sse, start_gateway
from tests.fixtures.service import spawn_service
from tests.integration.test_gateway_lifecycle import LONG
from tests.integration.test_service import chat_request
from trtllm_responses.inference.v1 import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e


async def test_sigterm_drains_then_exits_zero(tmp_path):
    proc = await asyncio.to_thread(spawn_service, tmp_path, "--grace-period-s", "60")
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            call = stub.Generate(chat_request("Tell a story.", max_tokens=32, ignore_eos=True))
            async for msg in call:  # running: the first text is out
                if msg.HasField("delta") and msg.delta.text:
                    break
            proc.proc.send_signal(signal.SIGTERM)
            finals = [m.final for m in [m async for m in call] if m.HasField("final")]
            assert finals and finals[0].usage.completion_tokens == 32
        code = await asyncio.to_thread(proc.proc.wait, 60)
        assert code == 0, proc.log_path.read_text()[-2000:]
        log = proc.log_path.read_text()
        assert '"msg": "request finished"' in log and '"completion_tokens": 32' in log
        assert '"msg": "event loop: uvloop"' in log  # the default
    finally:
        proc.stop()


async def test_service_killed_mid_stream_gives_failed_and_stored_failed(tmp_path):
    proc = spawn_service(tmp_path)
    handle, runner = await start_gateway(proc.address, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(handle.base_url + "/responses", json=LONG) as resp:
                assert resp.status == 200
                head = []
                async for raw in resp.content:
                    head.append(raw.decode())
                    if raw.startswith(b"event: response.output_text.delta"):
                        break
                proc.proc.kill()  # the service dies mid-stream
                rest = (await resp.read()).decode()
        events = parse_sse("".join(head) + rest)
        final = check_stream(events)
        assert events[-1]["type"] == "response.failed"
        assert final["status"] == "failed" and final["error"]["code"] == "server_error"
        assert final["output"] and final["output"][0]["content"][0]["text"]  # the partial text is kept
        stored = await handle.client.responses.retrieve(final["id"])
        assert stored.status == "failed" and stored.error.code == "server_error"
    finally:
        proc.stop()
        await handle.client.close()
        await runner.cleanup()
