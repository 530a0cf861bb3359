"""The event loop each tier runs on (trtllm_common/loop.py) and its setting in both tiers."""
from __future__ import annotations

import asyncio
import builtins

import pytest
import uvloop

from trtllm_common import loop as event_loops
from trtllm_gateway.settings import parse_settings as gateway_settings
from trtllm_service.settings import parse_settings as service_settings


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default_loop_and_asyncio_the_opt_out():
    assert event_loops.run(_loop_type(), "uvloop") is uvloop.Loop
    plain = event_loops.run(_loop_type(), "asyncio")
    assert not issubclass(plain, uvloop.Loop) and issubclass(plain, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused():
    coro = _loop_type()
    with pytest.raises(ValueError, match="unknown event loop 'tokio'"):
        event_loops.run(coro, "tokio")
    coro.close()


def test_without_uvloop_the_process_runs_on_asyncio_and_says_why(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert event_loops.loop_factory("uvloop") is None
    assert "uvloop is not available" in caplog.text


@pytest.mark.parametrize("parse, env", [(gateway_settings, "TRTLLM_GATEWAY_EVENT_LOOP"),
                                        (service_settings, "TRTLLM_SERVICE_EVENT_LOOP")])
def test_both_tiers_take_the_setting_by_flag_and_env(parse, env, monkeypatch):
    assert parse([]).event_loop == "uvloop"
    assert parse(["--event-loop", "asyncio"]).event_loop == "asyncio"
    monkeypatch.setenv(env, "asyncio")
    assert parse([]).event_loop == "asyncio"
    with pytest.raises(SystemExit):
        parse(["--event-loop", "tokio"])
