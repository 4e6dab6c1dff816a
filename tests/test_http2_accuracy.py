"""HTTP/2 client and server spans (net/http's bundled HTTP/2 and golang.org/x/net/http2,
over TLS and h2c) against h2work's ground truth, with connection churn, and HTTP/1.1
traffic in the same process that must yield no HTTP/2 span.

Each truth line must match exactly one span with the same (method, path, status, server
port) and compatible times: a server span contains the handler's interval; a client
span starts inside the client's RoundTrip interval. Exactly two probe hits per request.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest

from testkit.gobuild import GoBuild, build
from testkit.traced import CLOCK_SLACK_NS, TracedRun, match_one_to_one, traced
from testkit.workload import read_truth, start_workload

# Which HTTP/2 implementation carried a truth line: spans say it in `service`, so a span
# attributed to the other library's connection would not match.
STACK_FLAVOR = {"nethttp": "net/http", "xnet": "x/net/http2", "nethttp-tls": "net/http",
                "nethttp-h2c": "net/http", "xnet-tls": "x/net/http2", "xnet-h2c": "x/net/http2"}


# Built with Go 1.27, x/net/http2 delegates to net/http/internal/http2 (unless built with
# the http2legacy tag): every stack is carried by net/http's own HTTP/2 code there.
GO127_FLAVOR = dict.fromkeys(STACK_FLAVOR, "net/http")


def _key(t: dict, flavor_of: dict[str, str] = STACK_FLAVOR) -> tuple:
    stack = t.get("client_stack") if t["side"] == "client" else t["server_stack"]
    return (flavor_of[stack], t["method"], t["path"], t["status"], t["server_port"])


def _span_key(s: object) -> tuple:
    return (s.service, s.method, s.full_method, s.status_code,  # type: ignore[attr-defined]
            s.server_port)  # type: ignore[attr-defined]


# h2work's own pins (newest x/net), stripped too, and an old x/net (2023) for layout drift,
# all with the machine's Go; then older Go releases (GOTOOLCHAIN, from the module cache or
# the proxy), whose bundled HTTP/2 has other struct layouts: Go 1.22 with and without
# DWARF (stripped: offsets_table.json) and Go 1.24; Go 1.20 with x/net v0.24.0 (its go.mod
# says 1.18). h2mods/go1.22 pins x/net v0.35.0, the last release whose go.mod says a Go
# older than 1.23 (1.18). Go 1.22 has no h2c in net/http
# (http.Protocols is 1.24): h2work's h2c_old.go then drives its bundled HTTP/2 directly.
# Go 1.27 (with and without DWARF): net/http's HTTP/2 lives in net/http/internal/http2.
CASES = [
    pytest.param(None, "", None, id="dwarf"),
    pytest.param(None, "-s -w", None, id="stripped"),
    pytest.param("h2mods/xnet-v0.10.0", "", None, id="xnet-v0.10.0"),
    pytest.param("h2mods/go1.20", "", "go1.20.14", id="go1.20"),
    pytest.param("h2mods/go1.22", "", "go1.22.12", id="go1.22"),
    pytest.param("h2mods/go1.22", "-s -w", "go1.22.12", id="go1.22-stripped"),
    pytest.param("h2mods/go1.22", "", "go1.24.13", id="go1.24"),
    pytest.param(None, "", "go1.27.4", id="go1.27"),
    pytest.param(None, "-s -w", "go1.27.4", id="go1.27-stripped"),
]


@pytest.mark.parametrize(("mod", "ldflags", "toolchain"), CASES)
def test_http2_client_and_server_spans_match_truth_one_to_one(mod: str | None, ldflags: str,
                                                               toolchain: str | None) -> None:
    env = (("GOTOOLCHAIN", toolchain),) if toolchain else ()
    go127 = bool(toolchain and toolchain.startswith("go1.27"))
    flavor_of = GO127_FLAVOR if go127 else STACK_FLAVOR
    binary = build(GoBuild(src="h2work", mod=mod, ldflags=ldflags, env=env))
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "client.jsonl", Path(tmp) / "server.jsonl"
        args = ["-servers", "8", "-conns-per-server", "2", "-goroutines", "6", "-rpcs", "12",
                "-churn", "4", "-truth", ct, "-server-truth", st, "-hold"]
        with start_workload(binary, args) as wl:
            run = traced(wl)
        client, server = read_truth(ct), read_truth(st)

    check_h2work(run, client, server, flavor_of, go127)


def check_h2work(run: TracedRun, client: list[dict], server: list[dict],
                 flavor_of: dict[str, str], go127: bool = False) -> None:
    """An h2work run against its truth: every HTTP/2 client and server request one to one
    with a span (identity, times, fields), none unmatched, lost or duplicated, two hits per
    request on each side and flavor."""

    def key(t: dict) -> tuple:
        return _key(t, flavor_of)

    assert run.summary is not None and run.summary["failed"] == 0
    h2_client = [t for t in client if t["proto"] == "HTTP/2.0"]
    h2_server = [t for t in server if t["proto"] == "HTTP/2.0"]
    h1 = [t for t in client if t["proto"] == "HTTP/1.1"]
    assert h1 and len(h1) + len(h2_client) == len(client)

    for side in ("client", "server"):
        assert len(run.of_kind(f"http_{side}", include_unmatched=True)) == len(
            run.of_kind(f"http_{side}"))
    for name in ("unmatched_end", "ringbuf_full", "bad_read", "start_reused", "dup_end"):
        assert run.stats[f"http2.{name}"] == 0, run.stats

    cspans = run.of_kind("http_client")
    pairs, lost, extra = match_one_to_one(
        h2_client, cspans, key, _span_key,
        lambda t, s: t["client_start_ns"] - CLOCK_SLACK_NS <= s.start_ns
        <= t["client_end_ns"] + CLOCK_SLACK_NS)
    assert not lost, [h2_client[i] for i in lost[:5]]
    assert not extra, [cspans[j] for j in extra[:5]]  # HTTP/1.1 made none

    sspans = run.of_kind("http_server")
    pairs_s, lost_s, extra_s = match_one_to_one(
        h2_server, sspans, key, _span_key,
        lambda t, s: s.start_ns <= t["server_start_ns"] + CLOCK_SLACK_NS
        and t["server_end_ns"] <= s.end_ns + CLOCK_SLACK_NS)
    assert not lost_s, [h2_server[i] for i in lost_s[:5]]
    assert not extra_s, [sspans[j] for j in extra_s[:5]]

    # every stack and both transports security modes were exercised and matched
    assert {h2_client[i]["client_stack"] for i, _ in pairs} == {"nethttp", "xnet"}
    matched_srv = [h2_server[i] for i, _ in pairs_s]
    assert {t["server_stack"] for t in matched_srv} == {
        "nethttp-tls", "nethttp-h2c", "xnet-tls", "xnet-h2c"}
    assert Counter(t["tls"] for t in matched_srv).keys() == {True, False}
    assert len({t["status"] for t in matched_srv}) > 5

    # identity: (pid, conn, stream id) never reused by two overlapping spans
    for spans in (cspans, sspans):
        assert len({(s.pid, s.connection, s.stream_id, s.start_ns) for s in spans}) == len(spans)

    # exactly two hits per request on each side and flavor
    rc = run.run_counts
    for side in ("client", "server"):
        for fl in ("bundled",) if go127 else ("bundled", "xnet"):
            assert rc[f"http2_{side}_start_{fl}"] == rc[f"http2_{side}_end_{fl}"] > 0
    assert sum(rc.values()) == 2 * (len(cspans) + len(sspans))
