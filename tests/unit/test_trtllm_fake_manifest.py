"""The fake tensorrt_llm keeps the upstream public signatures recorded in
tests/fakes/manifest.json (written by hand from the upstream source). A mismatch means the
fake drifted from TensorRT-LLM, or the manifest was updated for a new release and the fake
must follow."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json

import pytest

from tests.fakes import FAKES_DIR, fake_trtllm

MANIFEST = json.loads((FAKES_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def fake():
    with fake_trtllm() as module:
        yield module


def resolve(ref: str):
    module_name, _, qualname = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def render_params(func) -> list[str]:
    rendered = []
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            rendered.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            rendered.append(f"*{p.name}")
        else:
            rendered.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return rendered


def render_fields(cls) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out.append(f"{f.name}={f.default!r}")
        elif f.default_factory is not dataclasses.MISSING:
            out.append(f"{f.name}=<factory:{f.default_factory.__name__}>")
        else:
            out.append(f.name)
    return out


@pytest.mark.parametrize("module_name", sorted(MANIFEST["exports"]))
def test_exports(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in MANIFEST["exports"][module_name] if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("ref", sorted(MANIFEST["callables"]))
def test_callable_signatures(ref):
    assert render_params(resolve(ref)) == MANIFEST["callables"][ref]


@pytest.mark.parametrize("ref", sorted(MANIFEST["fields"]))
def test_fields_and_defaults(ref):
    assert render_fields(resolve(ref)) == MANIFEST["fields"][ref]


@pytest.mark.parametrize("ref", sorted(MANIFEST["properties"]))
def test_properties(ref):
    cls = resolve(ref)
    for name in MANIFEST["properties"][ref]:
        assert isinstance(inspect.getattr_static(cls, name), property), f"{ref}.{name} is not a property"


@pytest.mark.parametrize("ref", MANIFEST["async_iterables"])
def test_async_iterables(ref):
    cls = resolve(ref)
    assert callable(getattr(cls, "__aiter__", None)) and inspect.iscoroutinefunction(cls.__anext__)


@pytest.mark.parametrize("ref", sorted(MANIFEST["bases"]))
def test_bases(ref):
    assert [b.__name__ for b in resolve(ref).__bases__] == MANIFEST["bases"][ref]


def test_max_tokens_default_is_the_reason_the_adapter_always_sets_it(fake):
    assert fake.SamplingParams().max_tokens == 32
