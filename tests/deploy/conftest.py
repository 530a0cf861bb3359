"""Fixtures: a Helm binary (installed by scripts/get_helm.sh if missing), rendered charts, and
`kv`, the strict Kubernetes object validator (kubernetes-validate; skips without it)."""
from __future__ import annotations

import pytest

from .chart import CI_VALUES, find_helm, template

try:
    import kubernetes_validate
except ImportError:  # only the strict-validation tests need it
    kubernetes_validate = None

MULTI_VALUES = CI_VALUES / "multi-replica-keda.yaml"


@pytest.fixture(scope="session")
def helm() -> str:
    path, why = find_helm()
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def default_docs(helm: str) -> list[dict]:
    return template(helm)


@pytest.fixture(scope="session")
def multi_docs(helm: str) -> list[dict]:
    return template(helm, [MULTI_VALUES])


@pytest.fixture(scope="session", params=["default", "multi-replica-keda"])
def rendered(request: pytest.FixtureRequest, default_docs: list[dict], multi_docs: list[dict]) -> list[dict]:
    """Each values file's rendering in turn."""
    return default_docs if request.param == "default" else multi_docs


@pytest.fixture
def kv():
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)")
    return kubernetes_validate
