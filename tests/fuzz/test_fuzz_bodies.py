"""Hypothesis request bodies (``strategies.py``) against every body-taking route.

Valid ones run a generation on the scripted engine (JSON, SSE or background); the rest are
refused. Either way: no 5xx, errors in the envelope, nothing logged with a traceback.
Byte-level mutations of valid-looking bodies exercise the JSON parser itself.
"""
from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.conftest import EXAMPLES
from tests.fuzz.live_stack import REQUEST_TIMEOUT_S, session

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
ROUTES = ["/responses", "/responses/input_tokens", "/responses/compact"]


def _post(http: requests.Session, url: str, raw: bytes, content_type: str = "application/json") -> requests.Response:
    return http.post(url, data=raw, headers={"Content-Type": content_type}, timeout=REQUEST_TIMEOUT_S)


def _dumps(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@pytest.mark.parametrize("route", ROUTES)
def test_generated_create_bodies(live, recorder, route):
    http = session()

    @SETTINGS
    @given(s.create_body)
    def run(body) -> None:
        raw = _dumps(body)
        recorder.check_response(_post(http, live.base_url + route, raw), f"POST {route} {raw[:800]!r}")

    run()


def test_generated_conversation_bodies(live, recorder):
    http = session()
    made = http.post(live.base_url + "/conversations", json={}, timeout=REQUEST_TIMEOUT_S)
    recorder.check_response(made, "POST /conversations {}")
    conversation = made.json()["id"]

    @SETTINGS
    @given(s.conversation_body, st.booleans())
    def run(body, add) -> None:
        url = live.base_url + (f"/conversations/{conversation}/items" if add else "/conversations")
        raw = _dumps(body)
        recorder.check_response(_post(http, url, raw), f"POST {url} {raw[:800]!r}")

    run()


@st.composite
def _mangled(draw) -> bytes:
    """A create body's bytes, cut short, with bytes inserted, or with one byte changed."""
    raw = bytearray(_dumps(draw(s.create_body)))
    how = draw(st.sampled_from(["cut", "insert", "flip"]))
    at = draw(st.integers(0, max(len(raw) - 1, 0)))
    if how == "cut":
        return bytes(raw[:at])
    if how == "insert":
        return bytes(raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:])
    raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


def test_mangled_bytes(live, recorder):
    http = session()

    @SETTINGS
    @given(_mangled(), st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    def run(raw, content_type) -> None:
        recorder.check_response(_post(http, live.base_url + "/responses", raw, content_type),
                                f"POST /responses {content_type} {raw[:800]!r}")

    run()
