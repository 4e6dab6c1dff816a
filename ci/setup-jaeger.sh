#!/usr/bin/env bash
# Build Jaeger all-in-one (v1: in-memory storage, OTLP/HTTP receiver, query API) from the Go
# module proxy, for tests/test_otlp.py. `go install` refuses the module (its go.mod has a
# replace directive), so: download the module, copy it out of the read-only module cache,
# build ./cmd/all-in-one. Cold: about 2 min; the binary is cached and reused.
# Prints the binary's path on stdout.
set -euo pipefail
VERSION="${JAEGER_VERSION:-v1.76.0}"
TOOLS="${PYHTTP2PROBE_TOOLS:-$HOME/.cache/pyhttp2probe/tools}"
BIN="$TOOLS/jaeger-all-in-one-$VERSION"
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$TOOLS"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/jaegertracing/jaeger@$VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && CGO_ENABLED=0 go build -o "$BIN.tmp" ./cmd/all-in-one) >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
