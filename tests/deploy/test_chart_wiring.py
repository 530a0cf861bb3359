"""The rendered objects fit together and fit the code they run.

Container args are parsed by the real settings parsers of the service and the gateway, so a
renamed flag breaks here and not in a cluster. Selectors, ports, probes, drain timing, secrets
and autoscaling targets are cross-checked between objects.
"""
from __future__ import annotations

import pytest

from trtllm_gateway.settings import GatewaySettings
from trtllm_gateway.settings import build_parser as gateway_parser
from trtllm_service.settings import build_parser as service_parser

from .chart import NAMESPACE, container, one


def _labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _arg(args: list[str], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))


def test_service_args_are_accepted_by_the_service_parser(rendered: list[dict]) -> None:
    inference = container(one(rendered, "Deployment", "inference"), "inference")
    assert inference["command"] == ["trtllm-responses-service"]
    args = service_parser().parse_args(inference["args"])
    ports = {p["name"]: p["containerPort"] for p in inference["ports"]}
    assert (args.port, args.metrics_port) == (ports["grpc"], ports["metrics"])
    assert args.engine == "trtllm" and args.model.startswith("/models/")
    assert 0 < args.kv_cache_free_gpu_memory_fraction <= 1 and args.max_batch_size >= 1


def test_gateway_args_are_accepted_by_the_gateway_parser(rendered: list[dict]) -> None:
    gateway = container(one(rendered, "Deployment", "gateway"), "gateway")
    assert gateway["command"] == ["trtllm-responses-gateway"]
    args = gateway_parser().parse_args(gateway["args"])
    assert args.host == "0.0.0.0" and args.port == gateway["ports"][0]["containerPort"]


def test_gateway_dials_every_inference_pod_through_the_headless_service(rendered: list[dict]) -> None:
    headless = one(rendered, "Service", "inference")
    assert headless["spec"]["clusterIP"] == "None"
    grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    args = gateway_parser().parse_args(container(one(rendered, "Deployment", "gateway"), "gateway")["args"])
    name = headless["metadata"]["name"]
    assert args.service == (f"dns:///{name}.{NAMESPACE}.svc.cluster.local:{grpc_port}",)


def test_services_and_budgets_select_their_pods(rendered: list[dict]) -> None:
    for tier in ("inference", "gateway"):
        pods = _pod_labels(one(rendered, "Deployment", tier))
        assert _labels_match(one(rendered, "Service", tier)["spec"]["selector"], pods)
        assert _labels_match(one(rendered, "PodDisruptionBudget", tier)["spec"]["selector"]["matchLabels"], pods)
    assert not _labels_match(one(rendered, "Service", "gateway")["spec"]["selector"],
                             _pod_labels(one(rendered, "Deployment", "inference")))


def test_network_policy_admits_only_the_gateway_to_grpc(rendered: list[dict]) -> None:
    policy = one(rendered, "NetworkPolicy", "inference")
    inference = one(rendered, "Deployment", "inference")
    ports = {p["name"]: p["containerPort"] for p in container(inference, "inference")["ports"]}
    assert _labels_match(policy["spec"]["podSelector"]["matchLabels"], _pod_labels(inference))
    grpc_rules = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": ports["grpc"], "protocol": "TCP"}]]
    assert len(grpc_rules) == 1 and len(grpc_rules[0]["from"]) == 1
    peer = grpc_rules[0]["from"][0]["podSelector"]["matchLabels"]
    assert _labels_match(peer, _pod_labels(one(rendered, "Deployment", "gateway")))
    assert not _labels_match(peer, _pod_labels(inference))
    other_ports = {r["ports"][0]["port"] for r in policy["spec"]["ingress"] if r is not grpc_rules[0]}
    assert other_ports == {ports["metrics"]}


def test_inference_probes_use_grpc_health_and_allow_a_long_load(rendered: list[dict]) -> None:
    inference = container(one(rendered, "Deployment", "inference"), "inference")
    grpc_port = next(p["containerPort"] for p in inference["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert inference[probe]["grpc"]["port"] == grpc_port
    startup = inference["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60


def test_termination_grace_covers_prestop_and_stream_drain(rendered: list[dict]) -> None:
    for tier, flag in (("inference", "--grace-period-s"), ("gateway", "--shutdown-timeout-s")):
        deployment = one(rendered, "Deployment", tier)
        c = container(deployment, tier)
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        drain = float(_arg(c["args"], flag))
        assert sleep > 0 and drain > 0
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > sleep + drain


def test_gateway_probes_are_http_healthz_and_readyz(rendered: list[dict]) -> None:
    gateway = container(one(rendered, "Deployment", "gateway"), "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_containers_run_non_root_on_a_read_only_root(rendered: list[dict]) -> None:
    for deployment in (d for d in rendered if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert any(m["mountPath"] == "/tmp" and m["name"] in writable for m in c["volumeMounts"])


def test_inference_gets_one_gpu_per_tensor_parallel_rank(rendered: list[dict]) -> None:
    inference = one(rendered, "Deployment", "inference")
    c = container(inference, "inference")
    tp = service_parser().parse_args(c["args"]).tensor_parallel_size
    assert c["resources"]["limits"]["nvidia.com/gpu"] == tp
    pod = inference["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_default_store_is_sqlite_on_the_chart_pvc(default_docs: list[dict]) -> None:
    deployment = one(default_docs, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    args = gateway_parser().parse_args(container(deployment, "gateway")["args"])
    claim = one(default_docs, "PersistentVolumeClaim")["metadata"]["name"]
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "store")
    mount = next(m for m in container(deployment, "gateway")["volumeMounts"] if m["name"] == "store")
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert args.store_url == f"sqlite:///{mount['mountPath']}/responses.db"


def test_external_database_url_comes_from_a_secret(multi_docs: list[dict]) -> None:
    gateway = container(one(multi_docs, "Deployment", "gateway"), "gateway")
    assert not any("postgresql://" in a for a in gateway["args"])
    ref = next(e for e in gateway["env"] if e["name"] == "TRTLLM_GATEWAY_STORE_URL")["valueFrom"]["secretKeyRef"]
    secret = next(d for d in multi_docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"])
    assert secret["stringData"][ref["key"]].startswith("postgresql://")


def test_api_keys_secret_is_read_by_the_gateway(multi_docs: list[dict], tmp_path) -> None:
    deployment = one(multi_docs, "Deployment", "gateway")
    gateway = container(deployment, "gateway")
    keys_file = gateway_parser().parse_args(gateway["args"]).api_keys_file
    mount = next(m for m in gateway["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    item = volume["secret"]["items"][0]
    assert keys_file == f"{mount['mountPath']}/{item['path']}"
    secret = next(d for d in multi_docs if d["kind"] == "Secret"
                  and d["metadata"]["name"] == volume["secret"]["secretName"])
    (tmp_path / "keys").write_text(secret["stringData"][item["key"]])
    assert GatewaySettings(api_keys_file=str(tmp_path / "keys")).all_api_keys() == ("sk-ci-key-one", "sk-ci-key-two")


def test_keda_scales_the_inference_deployment_on_waiting_requests(multi_docs: list[dict]) -> None:
    deployment = one(multi_docs, "Deployment", "inference")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    scaled = one(multi_docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": deployment["metadata"]["name"]}
    trigger = scaled["spec"]["triggers"][0]
    headless = one(multi_docs, "Service", "inference")["metadata"]["name"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == (
        f'sum(trtllm:num_requests_waiting{{namespace="{NAMESPACE}",service="{headless}"}})')


@pytest.mark.parametrize("tier, port", [("inference", "metrics"), ("gateway", "http")])
def test_service_monitors_scrape_each_tier(multi_docs: list[dict], tier: str, port: str) -> None:
    monitor = one(multi_docs, "ServiceMonitor", tier)
    service = one(multi_docs, "Service", tier)
    assert _labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == port
    assert port in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
