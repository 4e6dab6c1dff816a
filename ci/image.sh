#!/usr/bin/env bash
# Build the agent's container image here (docs/container.md) and print its name on stdout:
# localhost/pyhttp2probe:<hash of its inputs>, also tagged :<version> and :latest.
#
# 1. The base, the Containerfile's BASE (debian:bookworm-slim), is made from Debian's
#    packages with mmdebstrap (no image registry is reachable here) and imported under
#    that name, labelled with a hash of how it was made: reused while that label matches.
# 2. The image is built with buildah from the Containerfile, unless an image tagged with
#    the hash of its inputs (the Containerfile, setup.py, pyproject.toml, libbpf_loader/,
#    pyhttp2probe/, bpf_src/, vmlinux/, deploy/container/ and the base) already exists:
#    then nothing is built and this takes about a second.
#
# Options: --refresh-base  make the base again (e.g. for Debian's security updates).
# Environment: PYHTTP2PROBE_APT_SOURCES  apt sources for the base (default: this
# machine's /etc/apt/sources.list.d/debian.sources when there is one, else Debian's
# mirror); the engine settings come from deploy/container/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/deploy/container/containers.conf"

IMAGE=localhost/pyhttp2probe
BASE=$(sed -n 's/^ARG BASE=//p' Containerfile)
SUITE=bookworm
refresh_base=0
for arg in "$@"; do
    case "$arg" in
        --refresh-base) refresh_base=1 ;;
        *) echo "usage: ci/image.sh [--refresh-base]" >&2; exit 2 ;;
    esac
done

say() { echo "ci/image.sh: $*" >&2; }
# Run a step quietly; on failure show its output's tail and fail.
quietly() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        say "failed: $*"
        exit 1
    fi
    rm -f "$log"
}

# One build at a time (tests may call this concurrently); the lock goes with the process.
mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/pyhttp2probe"
exec 9>"${XDG_CACHE_HOME:-$HOME/.cache}/pyhttp2probe/image.lock"
flock 9

# -- 1. the base ----------------------------------------------------------------------------
sources=${PYHTTP2PROBE_APT_SOURCES:-}
if [ -z "$sources" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sources=/etc/apt/sources.list.d/debian.sources
fi
# debian:bookworm-slim's trims: no manuals, locales or docs (copyrights stay), installed
# later by apt in the image either; merged /usr without the usrmerge package (and its perl).
MMDEBSTRAP=(mmdebstrap --variant=minbase --quiet
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*')
recipe=$( { printf '%s\n' "${MMDEBSTRAP[@]}" "$SUITE"; [ -z "$sources" ] || cat "$sources"; } \
          | sha256sum | cut -c1-16)
have=$(podman image inspect --format '{{index .Labels "pyhttp2probe.base-recipe"}}' "$BASE" \
       2>/dev/null || true)
if [ "$refresh_base" = 1 ] || [ "$have" != "$recipe" ]; then
    say "making the base $BASE with mmdebstrap ($SUITE${sources:+, sources from $sources})"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    quietly "${MMDEBSTRAP[@]}" "$SUITE" "$tmp/base.tar" ${sources:+"$sources"}
    quietly podman import --change 'CMD ["bash"]' \
        --change "LABEL pyhttp2probe.base-recipe=$recipe" "$tmp/base.tar" "$BASE"
    rm -rf "$tmp"
    trap - EXIT
fi
base_id=$(podman image inspect --format '{{.Id}}' "$BASE")

# -- 2. the image ---------------------------------------------------------------------------
INPUTS=(Containerfile setup.py pyproject.toml libbpf_loader pyhttp2probe bpf_src vmlinux
        deploy/container)
# The sources git sees (tracked or new, not ignored: no caches, objects or extensions),
# by name and content, and the base they are built on.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    list_inputs() { git ls-files -co --exclude-standard -- "${INPUTS[@]}"; }
else
    list_inputs() { find "${INPUTS[@]}" -type f ! -name '*.py[co]' ! -name '*.so' ! -name '*.o'; }
fi
inputs=$( { echo "$base_id"; list_inputs | LC_ALL=C sort -u | while IFS= read -r f; do
              [ -f "$f" ] && sha256sum -- "$f"; done; } | sha256sum | cut -c1-16)
tag="$IMAGE:$inputs"
version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' pyhttp2probe/__init__.py)

if ! podman image exists "$tag"; then
    say "building $tag (pyhttp2probe $version)"
    build=(buildah build --layers --format docker --pull=never --network=host
           --label "pyhttp2probe.inputs=$inputs"
           --label "org.opencontainers.image.version=$version"
           --label "org.opencontainers.image.title=pyhttp2probe"
           -t "$tag" -f Containerfile)
    # A TLS-intercepting proxy between the build and PyPI: trust this machine's CAs, for
    # pip only (a volume for the build's RUN steps, never a layer of the image).
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        build+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
                --build-arg HOST_CA=/run/host-ca.crt)
    fi
    quietly "${build[@]}" .
fi
podman tag "$tag" "$IMAGE:$version" "$IMAGE:latest"
# Older builds of this checkout go (an image another tag still names is only untagged;
# buildah's cached build layers stay, for the next build).
podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE" \
    | grep -E ":[0-9a-f]{16}\$" | grep -vxF "$tag" \
    | xargs -r podman rmi >/dev/null 2>&1 || true
echo "$tag"
