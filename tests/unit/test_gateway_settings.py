"""Gateway settings: flags over env vars over defaults; lists; validation."""
from __future__ import annotations

import pytest

from trtllm_gateway.settings import GatewaySettings, build_parser, parse_settings


def test_defaults():
    s = parse_settings([], env={})
    assert (s.host, s.port, s.service) == ("127.0.0.1", 8080, ("127.0.0.1:50051",))
    assert s.api_keys == () and s.reasoning_dialect == "openai"


def test_env_then_flag_precedence_and_lists():
    env = {"TRTLLM_GATEWAY_PORT": "9000", "TRTLLM_GATEWAY_SERVICE": "a:1, b:2",
           "TRTLLM_GATEWAY_API_KEYS": "k1,k2"}
    s = parse_settings([], env=env)
    assert s.port == 9000 and s.service == ("a:1", "b:2") and s.api_keys == ("k1", "k2")
    s = parse_settings(["--port", "9100", "--service", "c:3"], env=env)
    assert s.port == 9100 and s.service == ("c:3",)


def test_keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# comment\nk3\n\n k4 \n")
    s = parse_settings(["--api-keys", "k1", "--api-keys-file", str(path)], env={})
    assert s.all_api_keys() == ("k1", "k3", "k4")


@pytest.mark.parametrize("argv,env", [
    (["--reasoning-dialect", "klingon"], {}),
    ([], {"TRTLLM_GATEWAY_REASONING_DIALECT": "klingon"}),
    ([], {"TRTLLM_GATEWAY_PORT": "eighty"}),
    (["--max-body-bytes", "0"], {}),
    (["--claim-backoff-max-s", "-1"], {}),
    (["--api-keys-file", "/nonexistent/keys"], {}),
])
def test_bad_values_exit_like_argparse(argv, env):
    with pytest.raises(SystemExit):
        parse_settings(argv, env=env)


def test_every_setting_is_documented_in_help():
    text = build_parser().format_help()
    for name in GatewaySettings.__dataclass_fields__:
        assert f"TRTLLM_GATEWAY_{name.upper()}" in text
