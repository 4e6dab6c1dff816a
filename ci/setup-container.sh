#!/usr/bin/env bash
# Install what building and running the container image needs (ci/image.sh,
# tests/test_container.py), from Debian's packages: buildah builds, podman runs, runc is
# the runtime (crun 1.8 refuses this machine's hybrid cgroups), mmdebstrap makes the base
# image from Debian's archive (no image registry is needed). Running as root, nothing
# else is: overlay storage is the kernel's, and buildah/podman pull in conmon, uidmap and
# the CNI plugins themselves. Idempotent and quiet: a second run only checks (< 1 s).
set -euo pipefail

PACKAGES=(buildah podman runc mmdebstrap)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci/setup-container.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
