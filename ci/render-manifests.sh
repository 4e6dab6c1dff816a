#!/usr/bin/env bash
# Render the plain Kubernetes manifests (deploy/kubernetes/pyhttp2probe.yaml) from the Helm
# chart with its default values, for clusters installed without Helm. Run it after every
# change to deploy/helm/pyhttp2probe; tests/test_helm.py fails while the two disagree.
#
#   bash ci/render-manifests.sh [OUTPUT]   (default deploy/kubernetes/pyhttp2probe.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-deploy/kubernetes/pyhttp2probe.yaml}
helm=$(bash ci/setup-helm.sh)
release=pyhttp2probe
namespace=pyhttp2probe
chart=deploy/helm/pyhttp2probe
body=$("$helm" template "$release" "$chart" --namespace "$namespace")
{
    echo "# pyhttp2probe: the Helm chart $chart rendered with its default values."
    echo "# Do not edit: made by ci/render-manifests.sh, i.e."
    echo "#   helm template $release $chart --namespace $namespace"
    echo "# Install: kubectl create namespace $namespace"
    echo "#          kubectl label namespace $namespace pod-security.kubernetes.io/enforce=privileged"
    echo "#          kubectl apply -f deploy/kubernetes/pyhttp2probe.yaml"
    echo "# Every node needs the seccomp profile: see docs/kubernetes.md."
    printf '%s\n' "$body"
} >"$out.tmp"
mv -f "$out.tmp" "$out"
