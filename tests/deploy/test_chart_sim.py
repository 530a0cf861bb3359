"""`inference.engine.kind: sim` deploys the simulator engine: no GPUs, the simulator's flags
(accepted by the service's own parser), none of TensorRT-LLM's, valid objects."""
from __future__ import annotations

import pytest

from trtllm_service.settings import build_parser as service_parser

from .chart import CHART, CI_VALUES, HelmFailed, container, one, run_helm, template
from .test_chart import K8S_VERSIONS, _core

SIM_VALUES = CI_VALUES / "sim.yaml"


@pytest.fixture(scope="module")
def sim_docs(helm: str) -> list[dict]:
    return template(helm, [SIM_VALUES])


def _inference(docs: list[dict]) -> dict:
    return container(one(docs, "Deployment", "inference"), "inference")


def test_sim_values_lint_strict(helm: str) -> None:
    assert "0 chart(s) failed" in run_helm(helm, "lint", str(CHART), "--strict", "-f", str(SIM_VALUES))


def test_sim_pods_run_the_simulator_without_gpus(sim_docs: list[dict]) -> None:
    inference = _inference(sim_docs)
    args = service_parser().parse_args(inference["args"])
    assert (args.engine, args.model) == ("sim", "/models/qwen2.5-0.5b-instruct")
    assert (args.sim_ttft_ms, args.sim_tokens_per_s, args.sim_output_tokens) == (50, 60, 256)
    assert (args.sim_reasoning_tokens, args.sim_tool_calls, args.max_batch_size) == (0, True, 256)
    assert not any(a.startswith(("--tensor-parallel", "--kv-cache", "--trtllm", "--enable-block")) for a in
                   inference["args"])
    assert "nvidia.com/gpu" not in inference["resources"].get("limits", {})
    pod = one(sim_docs, "Deployment", "inference")["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_sim_objects_validate_strictly(sim_docs: list[dict], kv) -> None:
    for doc in _core(sim_docs):
        kv.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_trtllm_pods_keep_their_gpus_and_engine_flags(default_docs: list[dict]) -> None:
    inference = _inference(default_docs)
    args = service_parser().parse_args(inference["args"])
    assert (args.engine, args.tensor_parallel_size) == ("trtllm", 1)
    assert inference["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert not any(a.startswith("--sim-") for a in inference["args"])


@pytest.mark.parametrize("sets, message", [
    ({"inference.engine.kind": "sim", "inference.engine.sim.tokensPerS": "-1"}, "tokensPerS"),
    ({"inference.engine.kind": "sim", "inference.engine.sim.burst": "2"}, "additional properties 'burst'"),
    ({"inference.engine.backend": "cpu"}, "additional properties 'backend'"),
], ids=["negative-rate", "unknown-sim-key", "old-backend-key"])
def test_sim_values_are_checked(helm: str, sets: dict[str, str], message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        template(helm, sets=sets)
