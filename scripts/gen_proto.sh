#!/usr/bin/env bash
# Generates the Python stubs (messages, gRPC service, .pyi typing) from proto/ into
# services/trtllm_responses/. The committed stubs must equal this script's output:
# tests/e2e/test_proto_stubs.py regenerates into a temp dir and compares.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/services}"
py="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out"
cd "$root/proto"
"$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  $(find . -name '*.proto' | sort)
# Packages for the generated modules.
for d in trtllm_responses trtllm_responses/inference trtllm_responses/inference/v1; do
  printf '"""Generated from proto/ by scripts/gen_proto.sh. Do not edit."""\n' > "$out/$d/__init__.py"
done
