#!/usr/bin/env bash
# Tools for the Helm chart's tests (tests/test_helm.py): helm, built from the Go module proxy,
# and kubernetes-validate (offline Kubernetes JSON schemas, from PyPI).
# Idempotent and quiet: builds helm only when the cached binary is missing (~90 s on 2 cores),
# pip-installs kubernetes-validate only when missing; then prints the helm binary's path,
# and nothing else, on stdout. A second run takes well under a second.
#
#   HELM=$(bash ci/setup-helm.sh)
#   PYHTTP2PROBE_TOOLS=DIR   cache directory (default ~/.cache/pyhttp2probe/tools)
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0  # ships schemas for Kubernetes 1.25 .. 1.37
tools=${PYHTTP2PROBE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pyhttp2probe/tools}
dir=$tools/helm-$HELM_VERSION
helm=$dir/helm

if [ ! -x "$helm" ]; then
    command -v go >/dev/null || { echo "ci/setup-helm.sh: Go is required to build helm" >&2; exit 1; }
    mkdir -p "$dir"
    # `go install` without ldflags leaves helm at version "v3.22" and, worse, makes it lint and
    # render against Kubernetes 1.20 (the source's placeholders). helm's own Makefile sets the
    # Kubernetes version from the client-go it builds with (v0.X.Y -> 1.X); do the same.
    mod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>/dev/null | python3 -c \
        'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$mod/go.mod")  # v0.37.0
    minor=$(echo "$client_go" | cut -d. -f2)
    major=$(( $(echo "${client_go#v}" | cut -d. -f1) + 1 ))
    [ -n "$minor" ] || { echo "ci/setup-helm.sh: no k8s.io/client-go in $mod/go.mod" >&2; exit 1; }
    ldflags="-s -w"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    # Build into a private directory, then rename: a concurrent run never sees half a binary.
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if ! GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath \
            -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        echo "ci/setup-helm.sh: building helm $HELM_VERSION failed" >&2
        exit 1
    fi
    got=$("$tmp/helm" version --template '{{.Version}}')
    [ "$got" = "$HELM_VERSION" ] || { echo "ci/setup-helm.sh: built helm says $got" >&2; exit 1; }
    mv -f "$tmp/helm" "$helm"
fi

if ! python3 - "$KUBERNETES_VALIDATE_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(version("kubernetes-validate") != sys.argv[1])
PY
then
    python3 -m pip install -q --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
fi

echo "$helm"
