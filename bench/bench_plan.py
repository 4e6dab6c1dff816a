"""Attach-plan time for a gRPC binary of 20+ MB: cold (no cache) and cached.

The target is built here from an inline Go program (grpc-go + x/net/http2 + net/http + a
few large std packages) with the grpc pins of tests/go/grpcmods, cached by content under
~/.cache/pyhttp2probe/gobin. Goals (issue 3): cold <= 1 s, cached <= 50 ms.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "tests" / "go" / "grpcmods" / "v1.85.0"
GOAL_COLD_S = 1.0
GOAL_CACHED_S = 0.05

SOURCE = """package main

import (
	"context"
	"database/sql"
	"encoding/xml"
	"fmt"
	"go/parser"
	"go/types"
	htmltemplate "html/template"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net"
	"net/http"
	"net/rpc"
	"net/smtp"
	"os"
	"archive/zip"
	"debug/dwarf"
	"debug/elf"
	"text/template"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

var keep = []any{sql.Open, xml.Marshal, parser.ParseFile, types.NewPackage,
	htmltemplate.New, gif.Decode, jpeg.Decode, png.Decode, rpc.NewServer, smtp.Dial,
	zip.OpenReader, dwarf.New, elf.Open, template.New, http2.ConfigureServer,
	health.NewServer, reflection.Register, status.Convert, http.ListenAndServe}

func main() {
	if len(os.Args) > 2 {
		fmt.Println(keep[len(os.Args)%len(keep)])
		srv := grpc.NewServer()
		reflection.Register(srv)
		lis, _ := net.Listen("tcp", os.Args[1])
		go srv.Serve(lis)
		conn, _ := grpc.Dial(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
		var in, out any
		_ = conn.Invoke(context.Background(), "/a/b", in, out)
		t := &http2.Transport{}
		_, _ = (&http.Client{Transport: t}).Get(os.Args[3])
	}
	fmt.Println(len(keep))
}
"""


def _drop_local_replacements(work: Path, env: dict[str, str]) -> None:
    """Drop the pins' modules replaced by a local directory (the test harness, which this
    program does not import): the copied go.mod's relative paths lead nowhere here."""
    mod = json.loads(subprocess.run(["go", "mod", "edit", "-json"], cwd=work, env=env,
                                    check=True, capture_output=True, text=True).stdout)
    local = [r["Old"]["Path"] for r in mod.get("Replace") or ()
             if r["New"]["Path"].startswith((".", "/"))]
    if local:
        subprocess.run(["go", "mod", "edit", *(f"-droprequire={p}" for p in local),
                        *(f"-dropreplace={p}" for p in local)],
                       cwd=work, env=env, check=True, capture_output=True)


def build_target(stripped: bool = False) -> Path:
    """Build (or reuse) the benchmark binary; returns its path."""
    h = hashlib.sha256(SOURCE.encode() + (PINS / "go.mod").read_bytes() + bytes([stripped]))
    h.update(subprocess.run(["go", "version"], capture_output=True).stdout)
    out = Path.home() / ".cache" / "pyhttp2probe" / "gobin" / f"bench-plan-{h.hexdigest()[:16]}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="benchplan-") as tmp:
        work = Path(tmp)
        (work / "main.go").write_text(SOURCE)
        shutil.copy2(PINS / "go.mod", work / "go.mod")
        shutil.copy2(PINS / "go.sum", work / "go.sum")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        _drop_local_replacements(work, env)
        subprocess.run(["go", "mod", "tidy"], cwd=work, env=env, check=True,
                       capture_output=True)
        cmd = ["go", "build", "-o", str(work / "out")]
        if stripped:
            cmd.append("-ldflags=-s -w")
        subprocess.run([*cmd, "."], cwd=work, env=env, check=True, capture_output=True)
        shutil.move(work / "out", out)
    return out


def _time_in_process(binary: Path, use_cache: bool, n: int) -> list[float]:
    from pyhttp2probe.goelf import build_plan
    from pyhttp2probe.probes import catalogue

    want = catalogue()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        build_plan(binary, want, use_cache=use_cache)
        times.append(time.perf_counter() - t0)
    return times


def _time_cli(binary: Path, no_cache: bool, n: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pyhttp2probe", "inspect", str(binary), "--json"]
    if no_cache:
        cmd.append("--no-cache")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return times


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f})"


def run() -> str:
    """Measure and return the Markdown section."""
    sys.path.insert(0, str(ROOT))
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="benchplan-cache-")
    rows = []
    verdict = []
    for stripped in (False, True):
        binary = build_target(stripped)
        size_mb = binary.stat().st_size / 1e6
        cold = _time_in_process(binary, use_cache=False, n=5)
        _time_in_process(binary, use_cache=True, n=1)  # fill the cache
        cached = _time_in_process(binary, use_cache=True, n=20)
        cli_cold = _time_cli(binary, no_cache=True, n=3)
        cli_cached = _time_cli(binary, no_cache=False, n=3)
        kind = "stripped (table offsets)" if stripped else "with DWARF"
        rows.append(f"| {kind} | {size_mb:.1f} MB | {_ms(cold)} | {_ms(cached)} | "
                    f"{_ms(cli_cold)} | {_ms(cli_cached)} |")
        verdict.append(statistics.median(cold) <= GOAL_COLD_S
                       and statistics.median(cached) <= GOAL_CACHED_S)
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    return "\n".join([
        "## Attach plan (goelf): cold and cached",
        "",
        "Target: grpc-go v1.85.0 + x/net/http2 + net/http + large std packages, built by "
        "`bench/bench_plan.py`. Cold = `build_plan(path, catalogue(), use_cache=False)` in "
        "a warm process (file in page cache; DWARF decompression, symbol lookup, RET "
        "disassembly of every catalogue function). Cached = plan loaded from the on-disk "
        "cache. The CLI columns are whole `python -m pyhttp2probe inspect --json` processes "
        "(interpreter start included). Goals: cold <= 1 s, cached <= 50 ms (in process).",
        "",
        "| binary | size | cold | cached | CLI cold | CLI cached |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Goals met: {'yes' if all(verdict) else 'NO'}.",
        "",
    ])


if __name__ == "__main__":
    print(run())
