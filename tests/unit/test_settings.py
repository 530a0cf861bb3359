"""Settings: flags over env vars over defaults; bad values are argparse errors."""
import pytest

from trtllm_service.settings import ServiceSettings, build_parser, parse_settings


def test_defaults():
    s = parse_settings([], env={})
    assert s == ServiceSettings()
    assert (s.port, s.metrics_port, s.engine) == (50051, 9400, "cpu")


def test_env_then_flag_precedence():
    env = {"TRTLLM_SERVICE_PORT": "6000", "TRTLLM_SERVICE_MAX_BATCH_SIZE": "4",
           "TRTLLM_SERVICE_ENABLE_BLOCK_REUSE": "false"}
    s = parse_settings(["--port", "7000"], env=env)
    assert (s.port, s.max_batch_size, s.enable_block_reuse) == (7000, 4, False)


def test_bool_flag_and_float():
    s = parse_settings(["--no-enable-block-reuse", "--grace-period-s", "2.5"], env={})
    assert (s.enable_block_reuse, s.grace_period_s) == (False, 2.5)


@pytest.mark.parametrize("argv,env", [(["--port", "x"], {}), (["--engine", "nope"], {}),
                                      ([], {"TRTLLM_SERVICE_ENGINE": "nope"}),
                                      ([], {"TRTLLM_SERVICE_PORT": "abc"}),
                                      (["--stream-interval", "0"], {})])
def test_bad_values_exit(argv, env):
    with pytest.raises(SystemExit):
        parse_settings(argv, env=env)


def test_every_flag_documents_its_env_var():
    text = build_parser().format_help()
    for name in ServiceSettings.__dataclass_fields__:
        assert f"TRTLLM_SERVICE_{name.upper()}" in text.replace("\n", " ").replace(" ", "") or \
            f"TRTLLM_SERVICE_{name.upper()}" in text
