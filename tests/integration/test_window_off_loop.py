"""A large window's Chat is built off the event loop (generation.window_chat): 10,000 items
take about 90 ms to translate, which on the loop would stall every other stream. Small
windows stay on the loop (a thread hop costs more than they do)."""
from __future__ import annotations

import threading

import pytest
import pytest_asyncio

from tests.integration.scripted_stack import start_stack
from trtllm_gateway import generation

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("window-off-loop"), lambda _prompt: "ok",
                          context=65536)
    yield s
    await s.stop()


@pytest.fixture
def built_on(monkeypatch) -> list[bool]:
    """Per build_chat call: True when it ran on the event loop's thread (the real one, called through)."""
    loop_thread, seen = threading.get_ident(), []
    build_chat = generation.build_chat

    def spy(req, items):
        seen.append(threading.get_ident() == loop_thread)
        return build_chat(req, items)
    monkeypatch.setattr(generation, "build_chat", spy)
    return seen


def window(turns: int, text: str = "hi") -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i in range(turns)] + \
        [{"role": "user", "content": "and now?"}]


@pytest.mark.parametrize("path", ["/responses", "/responses/input_tokens"])
async def test_large_windows_are_built_off_the_loop_small_ones_on_it(stack, built_on, path):
    http = stack.handle.client
    for items, on_loop in ((window(2), True), (window(100), False), (window(2, "x" * 70_000), False)):
        reply = await http.post(path, body={"model": "default", "input": items, "store": False}, cast_to=dict)
        assert reply.get("input_tokens") or reply.get("status") == "completed", reply
        assert built_on.pop() is on_loop, (len(items), path)
