"""Fuzz tier: the real gateway and service (scripted engine) under generated and hostile input.

Size: ``FUZZ_EXAMPLES`` (default 100) is the number of hypothesis examples per generated
test (each schemathesis operation and mode, each body strategy); the default run is a few
thousand requests in well under a minute. A long run: ``FUZZ_EXAMPLES=5000 bash
scripts/test.sh tests/fuzz``. The session summary prints the requests sent and their
status histogram.
"""
from __future__ import annotations

import os

import pytest

from tests.fuzz.live_stack import LiveStack, Recorder

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
_recorder: Recorder | None = None


@pytest.fixture(scope="session")
def live(tokenizer, tmp_path_factory):
    stack = LiveStack(tokenizer, tmp_path_factory.mktemp("fuzz"))
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def recorder():
    global _recorder
    _recorder = Recorder()
    yield _recorder
    _recorder.close()


def pytest_terminal_summary(terminalreporter) -> None:
    if _recorder is None or not _recorder.requests:
        return
    histogram = ", ".join(f"{status}: {n}" for status, n in sorted(_recorder.statuses.items()))
    terminalreporter.write_line(f"fuzz: {_recorder.requests} requests (FUZZ_EXAMPLES={EXAMPLES}); "
                                f"status histogram {{{histogram}}}")
