"""The first write of a stream (driver._opening): when the service's first Delta is already
in hand as the response opens, ``response.created`` and the first output go out in one write;
when it is not, the opening events go out at once and the output follows on its own."""
from __future__ import annotations

import pytest
import pytest_asyncio

from tests.fixtures.gateway import check_stream, raw_stream
from tests.integration.scripted_stack import start_stack
from trtllm_gateway import driver
from trtllm_gateway.sse import SSEWriter

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPENING = ["response.created", "response.in_progress"]
FIRST_OUTPUT = ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tokenizer, tmp_path_factory):
    s = await start_stack(tokenizer, tmp_path_factory.mktemp("first-write"), lambda _prompt: "one two three",
                          step_delay=0.05)
    yield s
    await s.stop()


@pytest.fixture
def batches(monkeypatch) -> list[list[str]]:
    """The event types of every SSE write, in order (the real writer, called through)."""
    seen: list[list[str]] = []
    write_batch = SSEWriter.write_batch

    async def spy(self, events, payloads):
        seen.append([e["type"] for e in events])
        await write_batch(self, events, payloads)
    monkeypatch.setattr(SSEWriter, "write_batch", spy)
    return seen


@pytest.mark.parametrize("store", [False, True])
async def test_first_delta_in_hand_goes_out_with_the_opening_events(stack, batches, store):
    status, events, _ = await raw_stream(stack.handle, {"model": "default", "input": "hi", "stream": True,
                                                         "store": store})
    assert status == 200
    check_stream(events)
    assert batches[0] == OPENING + FIRST_OUTPUT
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_a_slow_first_token_does_not_hold_back_the_opening_events(stack, batches, monkeypatch):
    monkeypatch.setattr(driver, "STREAM_START_WAIT_S", 0.01)  # the first step takes 0.05 s
    status, events, _ = await raw_stream(stack.handle, {"model": "default", "input": "hi", "stream": True})
    assert status == 200
    check_stream(events)
    assert batches[0] == OPENING
    assert batches[1] == FIRST_OUTPUT
