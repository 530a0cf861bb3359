"""The chart lints, renders the expected objects, validates, and refuses unsafe values.

Core kinds are validated strictly (unknown fields rejected) by kubernetes-validate against the
oldest Kubernetes the chart supports and the newest schema set it ships; custom resources
(ServiceMonitor, PrometheusRule, ScaledObject) against the structural schemas in crds.py.
"""
from __future__ import annotations

import copy

import jsonschema
import pytest

from .chart import CHART, HelmFailed, kind_counts, run_helm, template
from .conftest import MULTI_VALUES
from .crds import SCHEMAS, validate_crd_object

K8S_VERSIONS = ("1.29.0", "1.37.0")  # Chart.yaml kubeVersion floor, newest bundled schemas

DEFAULT_KINDS = {"ConfigMap": 1, "Deployment": 2, "NetworkPolicy": 1, "PersistentVolumeClaim": 1,
                 "PodDisruptionBudget": 2, "Secret": 2, "Service": 2, "ServiceAccount": 1}
MULTI_KINDS = {"ConfigMap": 1, "Deployment": 2, "HorizontalPodAutoscaler": 1, "Ingress": 1,
               "NetworkPolicy": 1, "PodDisruptionBudget": 2, "PrometheusRule": 1, "ScaledObject": 1,
               "Secret": 3, "Service": 2, "ServiceAccount": 1, "ServiceMonitor": 2}


@pytest.mark.parametrize("values", [[], ["-f", str(MULTI_VALUES)]], ids=["default", "multi-replica-keda"])
def test_helm_lint_strict(helm: str, values: list[str]) -> None:
    out = run_helm(helm, "lint", str(CHART), "--strict", *values)
    assert "0 chart(s) failed" in out


def test_default_values_render_expected_kinds(default_docs: list[dict]) -> None:
    assert kind_counts(default_docs) == DEFAULT_KINDS


def test_multi_replica_values_render_expected_kinds(multi_docs: list[dict]) -> None:
    assert kind_counts(multi_docs) == MULTI_KINDS


def _core(docs: list[dict]) -> list[dict]:
    return [d for d in docs if (d["apiVersion"], d["kind"]) not in SCHEMAS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_strictly(rendered: list[dict], version: str, kv) -> None:
    core = _core(rendered)
    assert len(core) >= 11
    for doc in core:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc.message} "
                        f"at {list(exc.path)}")


def test_strict_validation_rejects_a_misspelt_field(default_docs: list[dict], kv) -> None:
    """Negative control: the validator used above does reject what a template typo produces."""
    deployment = copy.deepcopy(next(d for d in default_docs if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_custom_resources_are_structurally_valid(multi_docs: list[dict]) -> None:
    custom = [d for d in multi_docs if (d["apiVersion"], d["kind"]) in SCHEMAS]
    assert {d["kind"] for d in custom} == {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
    for doc in custom:
        validate_crd_object(doc)


def test_crd_schema_rejects_a_misspelt_field(multi_docs: list[dict]) -> None:
    scaled = copy.deepcopy(next(d for d in multi_docs if d["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        validate_crd_object(scaled)


@pytest.mark.parametrize("sets", [
    {"gateway.replicas": "2"},
    {"gateway.autoscaling.enabled": "true"},
    {"gateway.autoscaling.enabled": "true", "gateway.autoscaling.minReplicas": "1",
     "gateway.autoscaling.maxReplicas": "3"},
], ids=["replicas=2", "hpa-default-max", "hpa-max=3"])
def test_sqlite_store_refuses_more_than_one_gateway_replica(helm: str, sets: dict[str, str]) -> None:
    with pytest.raises(HelmFailed, match=r"sqlite supports exactly one gateway replica"):
        template(helm, sets=sets)


def test_sqlite_store_accepts_an_hpa_capped_at_one(helm: str) -> None:
    docs = template(helm, sets={"gateway.autoscaling.enabled": "true", "gateway.autoscaling.minReplicas": "1",
                                "gateway.autoscaling.maxReplicas": "1"})
    assert kind_counts(docs)["HorizontalPodAutoscaler"] == 1


def test_external_store_allows_many_replicas(helm: str) -> None:
    docs = template(helm, sets={"gateway.replicas": "4", "gateway.store.type": "external",
                                "gateway.store.external.existingSecret": "db"})
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway"))
    assert gateway["spec"]["replicas"] == 4
    assert "PersistentVolumeClaim" not in kind_counts(docs)


@pytest.mark.parametrize("sets, message", [
    ({"inference.keda.enabled": "true", "inference.hpa.enabled": "true"}, "exclusive"),
    ({"inference.engine.tensorParallelSize": "4", "inference.gpusPerReplica": "2"}, "each tensor-parallel rank"),
    ({"gateway.store.type": "external"}, "needs gateway.store.external.url"),
    ({"inference.model.source": "initContainer"}, "needs inference.model.initContainer.command"),
], ids=["keda+hpa", "gpus<tp", "external-without-url", "init-without-command"])
def test_inconsistent_values_are_refused(helm: str, sets: dict[str, str], message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        template(helm, sets=sets)


@pytest.mark.parametrize("sets, message", [
    ({"gateway.replcas": "1"}, "additional properties 'replcas' not allowed"),
    ({"inference.engine.kind": "vllm"}, "inference/engine/kind"),
    ({"inference.engine.kvCacheFreeGpuMemoryFraction": "1.5"}, "kvCacheFreeGpuMemoryFraction"),
    ({"gateway.store.type": "redis"}, "gateway/store/type"),
], ids=["typo", "engine", "kv-fraction", "store-type"])
def test_values_schema_rejects_bad_values(helm: str, sets: dict[str, str], message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        template(helm, sets=sets)


@pytest.mark.parametrize("sets", [
    {"inference.model.source": "hostPath"},
    {"inference.model.source": "image", "inference.model.path": "/opt/model"},
    {"inference.model.source": "pvc", "inference.model.pvc.subPath": "llama"},
    {"inference.hpa.enabled": "true"},
    {"inference.engine.kind": "cpu", "inference.nodeSelector": "null", "inference.tolerations": "null"},
    {"inference.engine.kind": "sim", "inference.nodeSelector": "null", "inference.tolerations": "null"},
    {"gateway.auth.enabled": "false", "inference.networkPolicy.enabled": "false", "inference.pdb.enabled": "false"},
    {"gateway.store.sqlite.existingClaim": "mine", "gateway.auth.existingSecret": "keys"},
], ids=["hostPath", "image", "pvc-subPath", "custom-metric-hpa", "cpu-engine", "sim-engine", "features-off",
        "existing"])
def test_value_variants_render_valid_objects(helm: str, sets: dict[str, str], kv) -> None:
    docs = template(helm, sets=sets)
    for doc in _core(docs):
        kv.validate(doc, K8S_VERSIONS[-1], strict=True)
    inference = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-inference"))
    volumes = {v["name"] for v in inference["spec"]["template"]["spec"]["volumes"]}
    assert ("model" in volumes) == (sets.get("inference.model.source") != "image")
    limits = inference["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpu_engine = sets.get("inference.engine.kind", "trtllm") == "trtllm"  # cpu and sim default to no GPU
    assert ("nvidia.com/gpu" in limits) == gpu_engine
