"""trtllm_common.logs: JSON or text lines on stderr, with fixed fields on every line."""
from __future__ import annotations

import json
import logging

import pytest

from trtllm_common.logs import setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_fixed_fields_and_extras(capsys, restore_root):
    setup_logging("INFO", "json", fields={"worker": 3})
    logging.getLogger("t").info("hello %s", "there", extra={"rid": "resp_1"})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["msg"], line["worker"], line["rid"], line["logger"]) == ("hello there", 3, "resp_1", "t")


def test_text_lines_name_the_fields_and_lines_without_fields_are_unchanged(capsys, restore_root):
    setup_logging("INFO", "text", fields={"worker": 1})
    logging.getLogger("t").warning("drained")
    assert capsys.readouterr().err.strip().endswith("WARNING t [worker 1] drained")
    setup_logging("INFO", "text")
    logging.getLogger("t").warning("drained")
    assert capsys.readouterr().err.strip().endswith("WARNING t drained")
