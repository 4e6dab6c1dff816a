#!/usr/bin/env bash
# Install everything a fresh machine lacks, then build the project in place.
# Idempotent and quiet: a second run only checks, and takes a few seconds.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm libbpf-dev bpftool pkg-config nghttp2-client prometheus tmux)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci/setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "ci/setup.sh: Go is required (go1.21+)" >&2; exit 1; }

# Editable install: builds the cffi extension and the BPF objects into the tree.
stamp=.setup-stamp
inputs=$(cat setup.py pyproject.toml libbpf_loader/_cffi_src/* bpf_src/* 2>/dev/null | sha256sum)
# The editable install must point at THIS checkout (another clone may have taken it over).
installed_at=$(cd / && python3 -c "import pathlib, libbpf_loader, pyhttp2probe
print(pathlib.Path(pyhttp2probe.__file__).resolve().parent.parent)" 2>/dev/null || true)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$inputs" ] || [ "$installed_at" != "$(pwd -P)" ]; then
    python3 -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$inputs" > "$stamp"
fi
# Rebuild BPF objects when their sources changed since the install.
python3 setup.py -q build_bpf
# helm (built once from the Go module proxy, cached) and kubernetes-validate: tests/test_helm.py
bash ci/setup-helm.sh >/dev/null
