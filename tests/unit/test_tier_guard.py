"""The unit tier's guard (conftest.py): starting a process here is an error, whichever API starts it."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess

import pytest


def test_subprocess_is_refused():
    with pytest.raises(AssertionError, match="tests/e2e"):
        subprocess.run(["true"], check=False)


async def test_asyncio_subprocess_is_refused():
    with pytest.raises(AssertionError, match="tests/e2e"):
        await asyncio.create_subprocess_exec("true")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_is_refused(method):
    process = multiprocessing.get_context(method).Process(target=os.getpid)
    with pytest.raises(AssertionError, match="tests/e2e"):
        process.start()


def test_os_level_spawns_are_refused():
    for start in (os.fork, lambda: os.system("true"), lambda: os.posix_spawn("/bin/true", ["true"], {})):
        with pytest.raises(AssertionError, match="tests/e2e"):
            start()
