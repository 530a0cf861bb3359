"""The whole stack as shipped: service and gateway console scripts, driven by the openai SDK."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.fixtures.gateway import check_stream, plain
from tests.fixtures.service import free_port, spawn_service

pytestmark = pytest.mark.e2e


def spawn_gateway(tmp_dir: Path, service_address: str, *extra: str, ready_timeout: float = 60):
    """Starts `trtllm-responses-gateway`; returns (process, root URL) once /readyz is 200."""
    port = free_port()
    log_path = Path(tmp_dir) / f"gateway-{port}.log"
    exe = str(Path(sys.executable).with_name("trtllm-responses-gateway"))
    proc = subprocess.Popen([exe, "--port", str(port), "--service", service_address,
                             "--store-url", f"sqlite:///{tmp_dir}/e2e.db", *extra],
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ))
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(root + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, root, log_path
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"gateway not ready within {ready_timeout}s:\n{log_path.read_text()[-3000:]}")


def test_stack_serves_the_responses_api(tmp_path):
    service = spawn_service(tmp_path)
    gateway = None
    try:
        gateway, root, log_path = spawn_gateway(tmp_path, service.address)
        client = openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        first = client.responses.create(model=model, input="Say hello.", temperature=0, max_output_tokens=32)
        assert first.status in ("completed", "incomplete") and first.output_text
        events = []
        with client.responses.stream(model="default", input="And goodbye?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=32) as stream:
            for event in stream:
                events.append(plain(event))
        final = check_stream(events)
        assert final["previous_response_id"] == first.id
        assert final["usage"]["input_tokens"] > first.usage.input_tokens
        assert plain(client.responses.retrieve(final["id"])) == final
        with urllib.request.urlopen(root + "/metrics") as r:
            assert b"trtllm_gateway_http_requests_total" in r.read()
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(30) == 0, log_path.read_text()[-2000:]
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.kill()
        service.stop()
