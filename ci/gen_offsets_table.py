"""Generate pyhttp2probe/data/offsets_table.json: struct field offsets per module version.

Why: stripped targets have no DWARF, but their build info still names every module
version. This script builds ci/offsets_probe (a program linking every struct the probes
read) once per supported grpc-go and x/net version through the Go module proxy, then reads
the offsets from each build's DWARF with the same code the agent uses (goelf.dwarf), so the
table and live DWARF can never disagree on how an offset is computed.

    python3 ci/gen_offsets_table.py            # build what is missing (2 at a time), write table
    python3 ci/gen_offsets_table.py --jobs 1 --grpc v1.40.0 v1.85.0 --xnet none
    python3 ci/gen_offsets_table.py --merge --xnet none --go   # a new grpc-go field only

Builds are cached under ~/.cache/pyhttp2probe/offsets_probe; re-running only builds the
missing versions. Coverage: every grpc-go minor from v1.40 at its latest patch; x/net coarsely
(every 3rd release, plus whatever x/net each grpc build selected), since its structs move
rarely; Go std structs for the Go toolchain(s) that ran the builds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE_SRC = ROOT / "ci" / "offsets_probe"
TABLE = ROOT / "pyhttp2probe" / "data" / "offsets_table.json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyhttp2probe" / \
    "offsets_probe"
GRPC = "google.golang.org/grpc"
XNET = "golang.org/x/net"
XNET_BASE_GRPC = "v1.40.0"  # oldest grpc: lets MVS select any x/net release since 2021
MIN_GRPC_MINOR = 40
# Older/other Go toolchains: std offsets per Go minor; grpc versions they can still build.
TOOLCHAINS = ("go1.17.13", "go1.18.10", "go1.20.14", "go1.21.13", "go1.22.12",
              "go1.23.12", "go1.24.13", "go1.25.14", "go1.27.4")
TOOLCHAIN_GRPC = ("v1.40.0", "v1.58.3", "v1.72.2")


def _semver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("-")[0])[:3])


def list_versions(module: str) -> list[str]:
    """Released (non-prerelease) versions the proxy serves, oldest first."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "go.mod").write_text("module q\n")
        out = subprocess.run(["go", "list", "-m", "-versions", module], cwd=tmp, check=True,
                             capture_output=True, text=True).stdout.split()[1:]
    return sorted((v for v in out if "-" not in v), key=_semver)


def grpc_versions() -> list[str]:
    """Latest patch of every grpc-go minor from v1.40, plus v1.40.0."""
    latest: dict[int, str] = {}
    for v in list_versions(GRPC):
        major, minor, _ = _semver(v)
        if major == 1 and minor >= MIN_GRPC_MINOR:
            latest[minor] = v
    picked = [latest[m] for m in sorted(latest)]
    # v1.40.0 itself too: it is the floor many programs (and our tests) pin exactly.
    return ([XNET_BASE_GRPC] if XNET_BASE_GRPC not in picked else []) + picked


def xnet_versions(every: int = 3) -> list[str]:
    """Every `every`-th x/net release since v0.1.0 (2022), plus the newest."""
    vs = [v for v in list_versions(XNET) if _semver(v) >= (0, 1, 0)]
    picked = vs[::every]
    if vs and vs[-1] not in picked:
        picked.append(vs[-1])
    return picked


def _go(args: list[str], cwd: Path, toolchain: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod",
           "GOTOOLCHAIN": toolchain or "local"}
    return subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)


def build_probe(grpc: str, xnet: str | None = None, toolchain: str | None = None) -> Path:
    """Build the probe against grpc (and x/net if given); cached by those versions.

    `toolchain` (e.g. "go1.22.12", fetched through the module proxy by GOTOOLCHAIN) gives
    the std struct offsets of that Go minor and cross-checks that module offsets do not
    depend on the Go version that built them.

    Old grpc-go pins x/sys and friends too old for the current Go: on a failed build the
    helper modules (never grpc or the x/net under test) are bumped and the build retried.
    """
    name = (f"grpc@{grpc}" + (f"+xnet@{xnet}" if xnet else "")
            + (f"+{toolchain}" if toolchain else ""))
    out = CACHE / name
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="offprobe-") as tmp:
        work = Path(tmp)
        for p in PROBE_SRC.iterdir():
            shutil.copy2(p, work / p.name)
        gets = [f"{GRPC}@{grpc}"] + ([f"{XNET}@{xnet}"] if xnet else [])
        bumps: list[list[str]] = [[], ["golang.org/x/sys@latest"],
                                  ["golang.org/x/sys@latest", "golang.org/x/text@latest",
                                   "google.golang.org/protobuf@latest"]]
        err = ""
        for extra in bumps:
            steps = [["get", *gets, *extra], ["get", *gets], ["mod", "tidy"],
                     ["build", "-o", str(work / "probe"), "."]]
            for step in steps:
                proc = _go(step, work, toolchain)
                if proc.returncode != 0:
                    err = f"go {' '.join(step)}: {proc.stderr[-2000:]}"
                    break
            else:
                shutil.move(work / "probe", out.with_suffix(".tmp"))
                out.with_suffix(".tmp").rename(out)
                return out
        raise RuntimeError(f"build {name} failed: {err}")


def extract(binary: Path) -> tuple[str, dict[str, str], dict[str, dict[str, object]]]:
    """(go version, modules, field -> {offset, type}) from one probe build's DWARF."""
    sys.path.insert(0, str(ROOT))
    from pyhttp2probe.goelf.buildinfo import read_buildinfo
    from pyhttp2probe.goelf.dwarf import struct_fields
    from pyhttp2probe.goelf.elf import ElfFile
    from pyhttp2probe.probes import catalogue

    with ElfFile(binary) as elf:
        info = read_buildinfo(elf)
        found = struct_fields(elf, catalogue().fields)
    fields = {k: {"offset": f.offset, "type": f.type_name} for k, f in found.items()}
    return info.go_version, info.modules, fields


def missing_call_sites(binary: Path) -> list[str]:
    """The gRPC client's call sites (pyhttp2probe/probes/grpc_client.py call_site_gaps) this
    build lacks. Each version and toolchain the table covers is checked here, since the
    tests build only a few of them."""
    sys.path.insert(0, str(ROOT))
    from pyhttp2probe.goelf import build_plan
    from pyhttp2probe.probes import catalogue
    from pyhttp2probe.probes import grpc_client as gc

    plan = build_plan(binary, catalogue(), use_cache=False)
    if gc.FN_END not in plan.functions:
        return []  # an x/net-only build
    return [f"{binary.name}: {gap}" for gap in gc.call_site_gaps(plan)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="parallel builds (2 cores: 2)")
    parser.add_argument("--grpc", nargs="*", help="grpc versions (default: all minors)")
    parser.add_argument("--xnet", nargs="*", help="x/net versions ('none' to skip)")
    parser.add_argument("--xnet-every", type=int, default=3,
                        help="take every Nth x/net release (1: all; default 3, coarse)")
    parser.add_argument("--go", nargs="*", default=list(TOOLCHAINS),
                        help="extra Go toolchains for std offsets (GOTOOLCHAIN values)")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="keep the table's entries for builds not made in this run, so "
                             "a field added to one module needs only that module's builds")
    parser.add_argument("--out", default=str(TABLE))
    args = parser.parse_args()
    grpcs = args.grpc or grpc_versions()
    xnets = [] if args.xnet == ["none"] else (args.xnet or xnet_versions(args.xnet_every))
    jobs: list[tuple[str, str | None, str | None]] = (
        [(g, None, None) for g in grpcs] + [(XNET_BASE_GRPC, x, None) for x in xnets]
        + [(g, None, t) for t in args.go for g in TOOLCHAIN_GRPC])
    binaries: list[Path] = []
    failures: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(build_probe, g, x, t): (g, x, t) for g, x, t in jobs}
        for fut in concurrent.futures.as_completed(futs):
            g, x, t = futs[fut]
            what = f"grpc {g} x/net {x or '-'} {t or 'local go'}"
            try:
                binaries.append(fut.result())
                print(f"built {what}", file=sys.stderr, flush=True)
            except RuntimeError as e:
                if t is None:
                    failures.append(str(e).splitlines()[0])
                # an old toolchain that cannot build this grpc is expected, not a failure
                print(f"FAILED {what}: {str(e)[:300]}", file=sys.stderr, flush=True)
    if args.build_only:
        return 1 if failures else 0
    sites = [m for b in sorted(binaries) for m in missing_call_sites(b)]
    for m in sites:
        print(f"MISSING CALL SITE {m}", file=sys.stderr)
    base = json.loads(Path(args.out).read_text()) if args.merge else None
    write_table(sorted(binaries), Path(args.out), failures, base)
    return 1 if failures or sites else 0


def write_table(binaries: list[Path], out: Path, failures: list[str],
                base: dict | None = None) -> None:
    """Merge every build's fields into the table, keyed by the module owning each field;
    on top of `base` (a table read before: --merge) when given."""
    sys.path.insert(0, str(ROOT))
    from pyhttp2probe.goelf.offsets import module_of, std_key
    from pyhttp2probe.probes import catalogue

    modules: dict[str, dict[str, dict[str, object]]] = base["modules"] if base else {}
    std: dict[str, dict[str, object]] = base["std"] if base else {}
    if base:
        failures = [*base.get("failed_builds", []), *failures]
    conflicts: list[str] = []
    for binary in binaries:
        go_version, mods, fields = extract(binary)
        for key, val in fields.items():
            owner = module_of(key, mods)
            if owner is None:
                slot = std.setdefault(std_key(go_version), {})
            else:
                slot = modules.setdefault(owner, {}).setdefault(mods[owner], {})
            if key in slot and slot[key] != val:
                # module layouts must not depend on the Go that built them; if they ever
                # do, the table cannot be keyed by module version alone: say so loudly
                conflicts.append(f"{key} {owner}@{mods.get(owner or '', '')} {go_version}: "
                                 f"{slot[key]} != {val}")
            slot[key] = val
    if conflicts:
        print("CONFLICTS (offset depends on Go version):\n  " + "\n  ".join(conflicts),
              file=sys.stderr)
        failures = [*failures, *conflicts]
    table = {
        "about": "Struct field offsets by module version, from DWARF of ci/offsets_probe "
                 "builds (ci/gen_offsets_table.py). std is keyed by Go minor version.",
        "failed_builds": failures,
        # what the table was generated for: a key outside this list is unknown, not absent
        "fields": sorted(catalogue().fields),
        "modules": {m: dict(sorted(v.items(), key=lambda kv: _semver(kv[0])))
                    for m, v in sorted(modules.items())},
        "std": dict(sorted(std.items())),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out}: {sum(len(v) for v in modules.values())} module versions",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
