"""Test configuration: offline Hugging Face, fixture modules per tier."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.fixtures.engine", "tests.fixtures.service", "tests.fixtures.gateway",
                  "tests.fixtures.postgres", "tests.fixtures.sim"]
