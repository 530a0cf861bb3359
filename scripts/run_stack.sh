#!/usr/bin/env bash
# Runs the whole stack on this machine: the inference service (CPU engine, default model)
# and the Responses gateway on http://127.0.0.1:8080, then prints ready-to-paste examples.
# Ctrl-C (or SIGTERM) stops both cleanly: the gateway first (open streams finish), then
# the service. Ports: GATEWAY_PORT (8080), SERVICE_PORT (50051), SERVICE_METRICS_PORT (9400).
# Extra service flags: SERVICE_ARGS="--max-batch-size 4"; extra gateway flags: GATEWAY_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
GATEWAY_PORT=${GATEWAY_PORT:-8080}
SERVICE_PORT=${SERVICE_PORT:-50051}
SERVICE_METRICS_PORT=${SERVICE_METRICS_PORT:-9400}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p var

service_pid="" gateway_pid=""
stop() {
    trap - INT TERM EXIT
    echo "stopping..." >&2
    if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
    if [ -n "$service_pid" ]; then kill -TERM "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true; fi
}
trap stop INT TERM EXIT

# shellcheck disable=SC2086  # SERVICE_ARGS/GATEWAY_ARGS are word-split on purpose
"$BIN/trtllm-responses-service" --host 127.0.0.1 --port "$SERVICE_PORT" \
    --metrics-port "$SERVICE_METRICS_PORT" --log-format text ${SERVICE_ARGS:-} &
service_pid=$!
# shellcheck disable=SC2086
"$BIN/trtllm-responses-gateway" --host 127.0.0.1 --port "$GATEWAY_PORT" \
    --service "127.0.0.1:$SERVICE_PORT" --store-url sqlite:///./var/responses.db --log-format text ${GATEWAY_ARGS:-} &
gateway_pid=$!

echo "waiting for the model to load (a few seconds)..." >&2
"$BIN/python" - "$GATEWAY_PORT" "$service_pid" "$gateway_pid" <<'EOF'
import os, sys, time, urllib.request
port, pids = sys.argv[1], [int(p) for p in sys.argv[2:]]
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"process {pid} exited during startup (see its log above)")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("the stack did not become ready within 600 s")
EOF

URL="http://127.0.0.1:$GATEWAY_PORT"
cat <<EOF

  Responses API ready at $URL/v1   (Ctrl-C stops both processes)

  curl:
    curl -s $URL/v1/responses -H 'Content-Type: application/json' \\
      -d '{"model": "default", "input": "Write a haiku about the sea."}'
    curl -sN $URL/v1/responses -H 'Content-Type: application/json' \\
      -d '{"model": "default", "input": "Tell me a joke.", "stream": true}'

  openai SDK (Python):
    from openai import OpenAI
    client = OpenAI(base_url="$URL/v1", api_key="unused")
    r = client.responses.create(model="default", input="Write a haiku about the sea.")
    print(r.output_text)

  metrics: $URL/metrics (gateway), http://127.0.0.1:$SERVICE_METRICS_PORT/metrics (service)

EOF

# Exit (and stop the other one) as soon as either process ends.
wait -n "$service_pid" "$gateway_pid" || true
