"""The gateway's ``--reasoning-key`` in the chart: ``gateway.reasoningKey``, from a Secret as
env ``TRTLLM_GATEWAY_REASONING_KEY``, read by the real settings parser and used by the real
keyring, so a rotation (a new entry first, the old one kept) is shown to work as rendered."""
from __future__ import annotations

import pytest

from trtllm_gateway import reasoning_crypto
from trtllm_gateway.settings import parse_settings

from .chart import HelmFailed, container, one, template

ENV = "TRTLLM_GATEWAY_REASONING_KEY"
OLD = "k1:" + "o" * 40
NEW = "k2:" + "n" * 40


def _ref(docs: list[dict]) -> dict:
    gateway = container(one(docs, "Deployment", "gateway"), "gateway")
    assert not any("reasoning" in arg for arg in gateway["args"]), "a secret never travels as an arg"
    return next(e for e in gateway["env"] if e["name"] == ENV)["valueFrom"]["secretKeyRef"]


def _keys(docs: list[dict]) -> tuple[str, ...]:
    """What the gateway's settings read from the Secret the env refers to."""
    ref = _ref(docs)
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"])
    return parse_settings([], env={ENV: secret["stringData"][ref["key"]]}).reasoning_key


def test_default_install_generates_one_key_every_pod_reads(default_docs: list[dict]) -> None:
    [entry] = _keys(default_docs)
    kid, secret = reasoning_crypto.parse_keys([entry])[0]
    assert kid == "helm" and len(secret) >= 48


def test_a_rotation_seals_with_the_new_key_and_still_opens_the_old(multi_docs: list[dict]) -> None:
    keys = _keys(multi_docs)
    assert [k.split(":")[0] for k in keys] == ["k2", "k1"]
    old_token = reasoning_crypto.Keyring([(kid, s.encode()) for kid, s in reasoning_crypto.parse_keys(keys[1:])]) \
        .seal("earlier reasoning", "tenant")
    ring = reasoning_crypto.keyring(keys)
    assert ring.open(old_token, "tenant") == "earlier reasoning"
    assert ring.seal("new", "tenant").startswith("rsn1.k2.")


def test_keys_given_in_values(helm: str) -> None:
    docs = template(helm, extra=["--set-json", f'gateway.reasoningKey.keys=["{NEW}", "{OLD}"]'])
    assert _keys(docs) == (NEW, OLD)


def test_an_existing_secret_is_referenced_not_rendered(helm: str) -> None:
    docs = template(helm, sets={"gateway.reasoningKey.existingSecret": "my-reasoning",
                                "gateway.reasoningKey.existingSecretKey": "entries"})
    assert _ref(docs) == {"name": "my-reasoning", "key": "entries"}
    assert not [d for d in docs if d["kind"] == "Secret" and "reasoning" in d["metadata"]["name"]]


@pytest.mark.parametrize("entry", ["k1:short", "no-id-separator" + "x" * 40, "bad id:" + "x" * 40,
                                   "k1:" + "x" * 20 + "," + "y" * 20])
def test_entries_the_gateway_would_refuse_are_refused_at_render(helm: str, entry: str) -> None:
    with pytest.raises(HelmFailed, match="reasoningKey"):
        template(helm, extra=["--set-json", f'gateway.reasoningKey.keys=["{entry}"]'])
    with pytest.raises(SystemExit):  # the control: the gateway itself refuses the same entry
        parse_settings(["--reasoning-key", entry])
