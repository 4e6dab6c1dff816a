"""Command line: `python -m pyhttp2probe <subcommand>`.

Each subcommand is a pair of functions: `add_<name>_parser(subparsers)` declares its
arguments and `cmd_<name>(args) -> int` runs it. To add one (e.g. `run`), write that
pair and append it to SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .goelf.errors import GoBinaryError
from .run import add_run_parser, cmd_run
from .top import add_top_parser, cmd_top

EXIT_BAD_INPUT = 2


def add_inspect_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`inspect BINARY [--json] [--no-cache]`: print the attach plan of a Go binary."""
    p = sub.add_parser("inspect", help="print the attach plan (offsets) of a Go binary")
    p.add_argument("binary", help="path of the Go executable")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    return p


def _print_plan_text(d: dict[str, object]) -> None:
    print(f"binary:         {d['path']}")
    print(f"go version:     {d['go_version']}   build id: {d['build_id']}   pie: {d['is_pie']}")
    print(f"offsets source: {d['offsets_source']}")
    print("modules:")
    for path, version in sorted(dict(d["modules"]).items()):  # type: ignore[call-overload]
        print(f"  {path} {version}")
    print("functions (file offsets):")
    for name, f in dict(d["functions"]).items():  # type: ignore[call-overload]
        rets = ", ".join(hex(r) for r in f["returns"])
        print(f"  {name}\n      entry {f['entry']:#x}  returns [{rets}]")
    print("fields:")
    types = dict(d["field_types"])  # type: ignore[call-overload]
    for key, off in dict(d["fields"]).items():  # type: ignore[call-overload]
        print(f"  {key:70s} {off:5d}  {types.get(key, '')}")
    for what in ("absent_functions", "absent_fields"):
        items = list(d[what])  # type: ignore[call-overload]
        if items:
            print(f"{what.replace('_', ' ')} (not in this build):")
            for item in items:
                print(f"  {item}")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Inspect one binary; JSON or readable text on stdout."""
    from .goelf.plan import build_plan
    from .probes import catalogue

    plan = build_plan(args.binary, catalogue(), use_cache=not args.no_cache)
    d = plan.to_json()
    if args.json:
        json.dump(d, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_plan_text(d)
    return 0


Subcommand = tuple[Callable[..., argparse.ArgumentParser], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: tuple[Subcommand, ...] = (
    (add_inspect_parser, cmd_inspect),
    (add_run_parser, cmd_run),
    (add_top_parser, cmd_top),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand in SUBCOMMANDS."""
    parser = argparse.ArgumentParser(prog="pyhttp2probe",
                                     description="eBPF tracing of Go gRPC/HTTP2 programs")
    parser.add_argument("--version", action="version", version=f"pyhttp2probe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, run in SUBCOMMANDS:
        add(sub).set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad target binaries exit 2 with one line on stderr, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GoBinaryError as e:
        print(f"pyhttp2probe: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
