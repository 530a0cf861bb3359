"""The unit tier is pure: a test here that starts a process fails, naming the tier it belongs in.

Tests that start processes (the service or gateway as a program, a CLI, a code generator)
live in tests/e2e; tools that check deployment files (hadolint, helm) in tests/deploy.
Setup, call and teardown are all watched, so a fixture that spawns is caught too.
"""
from __future__ import annotations

import multiprocessing.util
import os
import subprocess
from collections.abc import Generator

import pytest


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a unit test started a process: tests that do live in tests/e2e (or tests/deploy)")


def _guarded() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    mp.setattr(subprocess.Popen, "_execute_child", _refuse)  # subprocess.*, asyncio subprocesses
    mp.setattr(multiprocessing.util, "spawnv_passfds", _refuse)  # multiprocessing spawn/forkserver
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        mp.setattr(os, name, _refuse)
    return mp


def _guard_while_running() -> Generator[None, None, None]:
    """The body of each hook wrapper below: processes refused while the phase runs."""
    mp = _guarded()
    try:
        return (yield)
    finally:
        mp.undo()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guard_while_running())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guard_while_running())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    if nextitem is None:  # the session ends here: other tiers' session fixtures (PostgreSQL) stop now
        return (yield)
    return (yield from _guard_while_running())


@pytest.fixture(scope="module")
def compiler(tokenizer):
    """An xgrammar compiler for the default model's tokenizer (the grammar tests skip
    without xgrammar before they ask for it)."""
    import xgrammar as xgr

    return xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer))
