#!/usr/bin/env bash
# Runs every test tier with the project's venv. Exit code 5 (no tests collected) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
