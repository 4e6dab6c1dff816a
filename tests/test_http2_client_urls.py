"""An HTTP/2 client span carries the host and path its request was sent with, exactly,
whatever the URL's shape: the agent reads host and path in one go when url.Parse left them
adjacent in memory and one by one otherwise (an escaped path, a URL built field by field),
cuts a host at 64 bytes and a path at 128 and flags each cut, and takes Request.Host when the
URL has none. One process (tests/go/h2urls, x/net/http2 on both sides), its ground truth
written by itself."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from testkit.gobuild import GoBuild, build
from testkit.traced import traced
from testkit.workload import read_truth, start_workload

ROUNDS = 20
HOST_MAX, PATH_MAX = 64, 128  # bpf_src/events.h H2_HOST_MAX, H2_PATH_MAX
SHAPES = {"adjacent", "escaped", "userinfo", "host-64", "host-long", "path-128", "path-long",
          "empty-path", "built", "host-header"}


def test_client_spans_carry_each_url_shapes_host_and_path_cut_and_flagged() -> None:
    binary = build(GoBuild(src="h2urls"))
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = Path(tmp) / "truth.jsonl"
        args = ["-rounds", str(ROUNDS), "-truth", str(truth_path), "-hold"]
        with start_workload(binary, args) as wl:
            run = traced(wl)
        truth = read_truth(truth_path)
    assert {t["shape"] for t in truth} == SHAPES and len(truth) == ROUNDS * len(SHAPES)
    for k in ("unmatched_end", "bad_read", "ringbuf_full"):
        assert run.stats[f"http2.{k}"] == 0, run.stats

    def expect(host: str, path: str) -> tuple:
        return (host[:HOST_MAX], path[:PATH_MAX], len(host) > HOST_MAX, len(path) > PATH_MAX)

    clients = run.of_kind("http_client")
    got = Counter(
        (s.server_address + (f":{s.server_port}" if s.server_port else ""), s.full_method,
         "host_truncated" in s.flags, "path_truncated" in s.flags)
        for s in clients)
    want = Counter(expect(t["host"], t["path"]) for t in truth)
    assert got == want
    assert not [s for s in clients if "error" in s.flags or s.status_code != 200]
    # the cuts happened, and the joined read met both its bounds exactly
    assert any(len(t["host"]) == HOST_MAX for t in truth)
    assert any(len(t["path"]) == PATH_MAX for t in truth)
    assert sum(1 for k in want if k[2]) and sum(1 for k in want if k[3])
