#!/usr/bin/env bash
# GPU smoke test of the whole stack on real TensorRT-LLM. Run it INSIDE the pinned release
# image, from the repository root, with a small HF chat model on a local path:
#
#   docker run --rm --gpus all --ipc=host -v "$PWD:/src" -w /src \
#     -v /path/to/Qwen2.5-0.5B-Instruct:/models/qwen:ro \
#     nvcr.io/nvidia/tensorrt-llm/release:1.2.1 bash scripts/gpu_smoke.sh /models/qwen
#
# It installs this package, starts the inference service (--engine trtllm) and the gateway,
# then uses the openai SDK: one plain response, one streamed response, one structured
# output; checks the service's metrics; and exits non-zero on any failure. With
# RUN_GPU_TESTS=1 it also runs tests/gpu (pytest) against the same model.
set -euo pipefail

MODEL="${1:-${TRTLLM_TEST_MODEL:-}}"
if [[ -z "$MODEL" ]]; then
    echo "usage: $0 MODEL_DIR   (or set TRTLLM_TEST_MODEL)" >&2
    exit 2
fi
SERVICE_PORT="${SERVICE_PORT:-50051}"
METRICS_PORT="${METRICS_PORT:-9400}"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
START_TIMEOUT_S="${START_TIMEOUT_S:-900}"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

fail() {
    echo "gpu_smoke: FAIL: $*" >&2
    for log in "$WORK"/*.log; do
        echo "----- $log (last 60 lines)" >&2
        tail -n 60 "$log" >&2 || true
    done
    exit 1
}

if ! nvidia-smi -L; then
    fail "nvidia-smi lists no GPU: run with --gpus all on a GPU host"
fi
python3 -c "import tensorrt_llm, sys; print('tensorrt_llm', tensorrt_llm.__version__)" \
    || fail "tensorrt_llm does not import: run this inside nvcr.io/nvidia/tensorrt-llm/release:1.2.1"

echo "gpu_smoke: installing the package"
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --no-cache-dir . || fail "pip install failed"

echo "gpu_smoke: starting the service on :$SERVICE_PORT with $MODEL"
trtllm-responses-service --engine trtllm --model "$MODEL" --host 127.0.0.1 --port "$SERVICE_PORT" \
    --metrics-port "$METRICS_PORT" --log-format text >"$WORK/service.log" 2>&1 &
PIDS+=("$!")

python3 - "$SERVICE_PORT" "$START_TIMEOUT_S" <<'PY' || fail "the service did not become SERVING"
import sys, time
import grpc
from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g
port, limit = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + limit
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = g.HealthStub(channel)
    while time.monotonic() < deadline:
        try:
            if stub.Check(h.HealthCheckRequest(), timeout=2).status == h.HealthCheckResponse.SERVING:
                sys.exit(0)
        except grpc.RpcError:
            pass
        time.sleep(2)
sys.exit(1)
PY

echo "gpu_smoke: starting the gateway on :$GATEWAY_PORT"
trtllm-responses-gateway --host 127.0.0.1 --port "$GATEWAY_PORT" --service "127.0.0.1:$SERVICE_PORT" \
    --store-url "sqlite:///$WORK/responses.db" --log-format text >"$WORK/gateway.log" 2>&1 &
PIDS+=("$!")

python3 - "$GATEWAY_PORT" "$METRICS_PORT" <<'PY' || fail "the openai SDK checks failed"
import json, sys, time, urllib.request
import openai

gateway_port, metrics_port = sys.argv[1], sys.argv[2]
root = f"http://127.0.0.1:{gateway_port}"
for _ in range(60):
    try:
        urllib.request.urlopen(root + "/readyz", timeout=2)
        break
    except OSError:
        time.sleep(1)
else:
    sys.exit("gateway never became ready")

client = openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=300)
model = client.models.list().data[0].id
print("model:", model)

plain = client.responses.create(model=model, input="Name one planet. Answer with one word.",
                                max_output_tokens=32, temperature=0)
assert plain.status in ("completed", "incomplete"), plain.status
assert plain.output_text.strip(), "empty output"
assert plain.usage.input_tokens > 0 and plain.usage.output_tokens > 0, plain.usage
print("plain:", repr(plain.output_text))

events = list(client.responses.create(model=model, input="Count from one to five.", stream=True,
                                      max_output_tokens=64, temperature=0))
types = [e.type for e in events]
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete"), types
assert text and text == events[-1].response.output_text, (text, events[-1].response.output_text)
print("stream:", len(events), "events,", repr(text[:80]))

schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
structured = client.responses.create(
    model=model, input="Which city is the capital of France? Reply in JSON.", max_output_tokens=64,
    temperature=0, text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}})
value = json.loads(structured.output_text)
assert isinstance(value, dict) and isinstance(value.get("city"), str), value
print("structured:", value)

metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
for name in ("trtllm:time_to_first_token_seconds", "trtllm:num_requests_running",
             "trtllm:kv_cache_usage_perc", "trtllm:generation_tokens"):
    assert name in metrics, f"metric {name} missing"
print("metrics: ok")
PY

if [[ "${RUN_GPU_TESTS:-0}" == "1" ]]; then
    echo "gpu_smoke: running tests/gpu"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --no-cache-dir pytest==9.2.0 pytest-asyncio==1.5.0 \
        || fail "installing pytest failed"
    TRTLLM_TEST_MODEL="$MODEL" python3 -m pytest tests/gpu -m gpu -q -p no:cacheprovider || fail "tests/gpu failed"
fi

echo "gpu_smoke: PASS"
