"""Schemathesis against OpenAI's own OpenAPI spec, for the ``/responses*`` operations.

The spec subset (``tests/fixtures/openai-openapi-responses.json``, made by
``scripts/extract_openapi_subset.py``; its ``info.x-source`` names the source and date)
drives schemathesis' generators. Three kinds of cases go to the live gateway, each answer
held to the suite's rules by ``Recorder.check``:

* positive: valid per the spec (many use features this server refuses with a 400);
* negative: schemathesis' spec violations, for the operations without a body (its negative
  bodies for the Responses schema cost about half a second each, and hit a ``not`` it
  cannot complement);
* mutated: a positive body with one value somewhere in it replaced by a JSON value of
  another kind, a key dropped, or the whole body wrapped, which keeps the case close to
  valid, where the 500s were.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.fuzz.conftest import EXAMPLES
from tests.fuzz.live_stack import API_KEY, REQUEST_TIMEOUT_S
from tests.fuzz.strategies import json_values

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "openai-openapi-responses.json"
_schema = schemathesis.openapi.from_dict(json.loads(SPEC.read_text()))
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in _schema.get_all_operations())}
WITH_BODY = sorted(label for label in OPERATIONS if label.startswith("POST"))
WITHOUT_BODY = sorted(set(OPERATIONS) - set(WITH_BODY))
CASES = ([(label, "positive") for label in sorted(OPERATIONS)] + [(label, "negative") for label in WITHOUT_BODY]
         + [(label, "mutated") for label in WITH_BODY])
# Creating bodies from the Responses schema is the slow part (tens of ms each): fewer there.
SHARE = {"POST /responses": 0.3, "POST /responses/input_tokens": 0.3, "POST /responses/compact": 0.3}


@st.composite
def mutated(draw, body):
    """``body`` with one change: a value replaced, a key dropped, or the whole wrapped."""
    if not isinstance(body, (dict, list)) or not body:
        return draw(json_values)
    path, node = [], body
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    copy = json.loads(json.dumps(body))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    how = draw(st.sampled_from(["replace", "drop", "wrap"]))
    if not path:
        return [copy] if how == "wrap" else draw(json_values)
    if how == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = [parent[path[-1]]] if how == "wrap" else draw(json_values)
    return copy


def _strategy(operation, kind: str):
    if kind == "negative":
        return operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
    positive = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)
    if kind == "positive":
        return positive

    def mutate(case):
        return st.builds(lambda body: (case, body), mutated(case.body))
    return positive.flatmap(mutate)


@pytest.mark.parametrize("label, kind", CASES, ids=[f"{label} {kind}" for label, kind in CASES])
def test_spec_cases_get_no_5xx_and_errors_in_the_envelope(live, recorder, label, kind):
    operation = OPERATIONS[label]
    http = requests.Session()

    @settings(max_examples=max(1, int(EXAMPLES * SHARE.get(label, 1.0))), deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_strategy(operation, kind))
    def run(drawn) -> None:
        case, body = drawn if kind == "mutated" else (drawn, None)
        kwargs = case.as_transport_kwargs(base_url=live.base_url)
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {API_KEY}"}
        if kind == "mutated":
            kwargs.pop("json", None)
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"]["Content-Type"] = "application/json"
        response = http.request(**kwargs, timeout=REQUEST_TIMEOUT_S)
        what = f"{label} {kind}: {kwargs['method']} {kwargs['url']} {str(kwargs.get('json', body))[:600]}"
        recorder.check_response(response, what)

    try:
        run()
    except Unsatisfiable:  # e.g. a lone string path parameter: nothing in it can violate the spec
        pytest.skip(f"the spec leaves no {kind} cases for {label}")
    finally:
        http.close()
