"""Faults and bad inputs, against the node service as users run it (`pyhttp2probe run` in
a child process, real BPF, real Go programs, no mocks). Each test proves three things:
the traced programs are unharmed, the agent still runs (or, killed, leaves nothing in the
kernel), and nothing is lost silently — every loss and every refusal is a counted metric.

Every workload runs from a private copy named `faults-<pid>-…`, so `--exe` selects only
this file's processes (other tests may run on the machine at the same time).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.agentproc import AgentProcess
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.prom import free_port, http_get
from testkit.workload import read_truth, start_workload

TAG = f"faults-{os.getpid()}"
PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
OLDEST, NEWEST = PINS[0], PINS[-1]
# Every call has a server handler and a truth line on both sides (no client-side
# abandons, no nesting), so client and server counts both equal truth exactly.
EXACT = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-churn", "1", "-errors", "0.25",
         "-client-failures", "0", "-nested", "0"]
CLIENT, SERVER = "rpc_client_duration_seconds", "rpc_server_duration_seconds"


def _grpcwork(pin: str = NEWEST) -> Path:
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}"))


def _copy(binary: Path, tmp: Path, name: str) -> Path:
    """`binary` under a private name (its service_name), selected by `--exe {TAG}-*`."""
    out = tmp / f"{TAG}-{name}"
    shutil.copy2(binary, out)
    return out


def _agent(*args: str) -> AgentProcess:
    return AgentProcess(["--exe", f"{TAG}-*", *args])


def _wait(cond: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.1)
    return got


def _by_method(rows: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((r["method"].rsplit("/", 1)[1], str(r["code"])) for r in rows)


def _traced(agent: AgentProcess, service: str) -> float:
    return agent.value("pyhttp2probe_instrumented_processes", service_name=service)


def _run_exact(agent: AgentProcess, binary: Path, tmp: Path, tag: str,
               env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
    """Run grpcwork (EXACT) from `binary` to completion under the agent: found at its exec,
    its client and server counts (its service_name's series) equal its own truth."""
    service = (env or {}).get("OTEL_SERVICE_NAME", binary.name)
    ct, st = tmp / f"{tag}-client.jsonl", tmp / f"{tag}-server.jsonl"
    with start_workload(binary, [*EXACT, *extra, "-truth", ct, "-server-truth", st, "-hold"],
                        env=env) as wl:
        _wait(lambda: _traced(agent, service) == 1, what=f"{service} traced")
        wl.go()
        wl.wait_done(120)
        wl.finish()
    _assert_counts(agent, service, read_truth(ct), read_truth(st))


def _assert_counts(agent: AgentProcess, service: str, client: list[dict[str, Any]],
                   server: list[dict[str, Any]]) -> None:
    want_c, want_s = _by_method(client), _by_method(server)
    assert sum(want_c.values()) > 100 and len(want_c) > 1
    for metric, want in ((CLIENT, want_c), (SERVER, want_s)):
        got = _wait_counts(agent, metric, want, service_name=service)
        assert got == want, f"{service} {metric}"


def _wait_counts(agent: AgentProcess, metric: str, want: Any, timeout: float = 10.0,
                 **labels: str) -> collections.Counter[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while (got := agent.counts(metric, **labels)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


# -- the kernel's view of the agent's BPF state ----------------------------------------------
def _bpftool(*args: str) -> Any:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return json.loads(out) if out.strip() else []


def _in_flight_of(agent: AgentProcess, pid: int) -> dict[str, int]:
    """Entries keyed by `pid` in the agent's in-flight maps (every in-flight key starts
    with the u32 tgid), read through bpftool: {map name: entries}."""
    from pyhttp2probe.probes import all_paths

    names = {m[:15] for p in all_paths() for m in p.in_flight_maps}  # BPF_OBJ_NAME_LEN
    # slot tables (bpf_src/start_slots.h): a taken slot's tag (8 bytes) is not 0 and its
    # key, after the tag, starts with the tgid
    slots = {t.name[:15] for p in all_paths() for t in p.slot_tables}
    ids = agent.bpf_ids()["map"]
    out = {}
    for m in _bpftool("map", "show"):
        if m["id"] not in ids or m.get("name") not in names | slots:
            continue
        rows = _bpftool("map", "dump", "id", str(m["id"]))
        if m["name"] in slots:
            values = [bytes(int(b, 16) for b in r["value"]) for r in rows if "value" in r]
            out[m["name"]] = sum(1 for v in values if v[:8] != bytes(8)
                                 and int.from_bytes(v[8:12], "little") == pid)
        else:
            keys = [bytes(int(b, 16) for b in r["key"]) for r in rows if "key" in r]
            out[m["name"]] = sum(1 for k in keys if int.from_bytes(k[:4], "little") == pid)
    return out


# -- 1. a target killed with hundreds of RPCs in flight ---------------------------------------
def test_target_killed_with_hundreds_of_rpcs_in_flight_is_detached_and_forgotten(
        tmp_path: Path) -> None:
    killed, later = _copy(_grpcwork(), tmp_path, "killed"), _copy(_grpcwork(), tmp_path, "later")
    with _agent() as agent:
        # 4 servers x 64 goroutines, each call held 0-50 ms by its server: ~256 client
        # calls and as many server calls in flight at any moment.
        with start_workload(killed, ["-servers", "4", "-goroutines", "64", "-rpcs", "100000",
                                     "-delay-max", "50ms", "-client-failures", "0",
                                     "-nested", "0"]) as wl:
            _wait(lambda: _traced(agent, killed.name) == 1, what="killed traced")
            wl.go()
            _wait(lambda: sum(agent.counts(CLIENT, service_name=killed.name).values()) > 1000,
                  timeout=60, what="calls flowing")
            pid = wl.pid
            assert pid is not None
            in_flight = sum(_in_flight_of(agent, pid).values())
            wl.proc.kill()
            wl.proc.wait(timeout=10)
        assert in_flight > 200  # measured while it ran: hundreds in flight
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
        assert _traced(agent, killed.name) == 0
        assert http_get(f"{agent.url}/healthz")  # 200, or urllib raises
        # The agent forgets the dead process's calls: nothing of it stays in the maps.
        assert _wait(lambda: sum(_in_flight_of(agent, pid).values()) == 0, timeout=5,
                     what=f"in-flight entries of pid {pid} cleared")
        # ... and the next process is traced one to one with its truth.
        _run_exact(agent, later, tmp_path, "later")
        assert agent.stop() == 0, agent.stderr


# -- 2. binaries replaced or deleted on disk while traced -------------------------------------
def _start_exact(binary: Path, tmp: Path, tag: str, env: dict[str, str] | None = None,
                 extra: tuple[str, ...] = ()) -> Any:
    ct, st = tmp / f"{tag}-client.jsonl", tmp / f"{tag}-server.jsonl"
    wl = start_workload(binary, [*EXACT, "-seed", str(len(tag)), *extra, "-truth", ct,
                                 "-server-truth", st, "-hold"], env=env)
    return wl, ct, st


def test_binary_replaced_on_disk_new_process_planned_afresh_old_one_keeps_its_plan(
        tmp_path: Path) -> None:
    path = tmp_path / f"{TAG}-replaced"
    shutil.copy2(_grpcwork(OLDEST), path)
    with _agent() as agent:
        old, old_ct, old_st = _start_exact(path, tmp_path, "old",
                                           env={"OTEL_SERVICE_NAME": "replaced-old"})
        with old:
            _wait(lambda: _traced(agent, "replaced-old") == 1, what="old traced")
            # A deploy: the new build is written beside the path and renamed over it.
            fresh = tmp_path / f"{TAG}-replaced.tmp"
            shutil.copy2(_grpcwork(NEWEST), fresh)
            os.rename(fresh, path)
            new, new_ct, new_st = _start_exact(path, tmp_path, "new",
                                               env={"OTEL_SERVICE_NAME": "replaced-new"})
            with new:
                _wait(lambda: _traced(agent, "replaced-new") == 1, what="new traced")
                assert os.readlink(f"/proc/{old.pid}/exe").endswith(" (deleted)")
                for wl in (old, new):  # both run at once, each under its own plan
                    wl.go()
                for wl in (old, new):
                    wl.wait_done(120)
                    wl.finish()
        _assert_counts(agent, "replaced-old", read_truth(old_ct), read_truth(old_st))
        _assert_counts(agent, "replaced-new", read_truth(new_ct), read_truth(new_st))
        assert agent.value("pyhttp2probe_attach_errors_total") == 0
        assert agent.stop() == 0, agent.stderr


def test_binary_deleted_from_disk_while_traced_is_still_traced_exactly(tmp_path: Path) -> None:
    path = _copy(_grpcwork(), tmp_path, "deleted")
    with _agent() as agent:
        wl, ct, st = _start_exact(path, tmp_path, "deleted")
        with wl:
            _wait(lambda: _traced(agent, path.name) == 1, what="traced")
            path.unlink()
            wl.go()
            wl.wait_done(120)
            wl.finish()
        _assert_counts(agent, path.name, read_truth(ct), read_truth(st))
        assert agent.stop() == 0, agent.stderr


# -- 3. a target that re-execs another binary -------------------------------------------------
class _Lines:
    """A child driven by stdin lines whose stdout lines answer (tests/go/h2exec)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, prefix: str, timeout: float = 30.0) -> list[str]:
        """The next stdout line, which must start with `prefix`, split."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.proc.args}: no {prefix!r} in {timeout}s") from None
        assert line is not None and line.startswith(prefix), (line, self.proc.args)
        return line.split()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30.0) -> int:
        self.send("quit")
        rc = self.proc.wait(timeout=timeout)
        _, err = self.proc.communicate()
        assert rc == 0, err
        return rc

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _h2_counts(agent: AgentProcess, service: str) -> tuple[float, float]:
    """(HTTP/2 client requests, HTTP/2 server requests) counted for `service`."""
    return (agent.value("http_client_request_duration_seconds_count", service_name=service),
            agent.value("http_server_request_duration_seconds_count", service_name=service))


def test_process_that_execs_another_binary_is_replanned_for_its_new_image(
        tmp_path: Path) -> None:
    h2 = build(GoBuild(src="h2exec"))
    first, second = _copy(h2, tmp_path, "exec-first"), _copy(h2, tmp_path, "exec-second")
    with _agent() as agent, _Lines([str(first)]) as proc:
        pid = int(proc.expect("READY")[1])
        want = {first.name: 0, second.name: 0}
        # first -> second -> first again: each exec keeps the pid and start time and
        # changes the image; the agent follows the image, never the pid.
        for image, n in ((first, 40), (second, 70), (first, 30)):
            if n != 40:
                proc.send(f"exec {image}")
                assert int(proc.expect("READY")[1]) == pid
            _wait(lambda img=image: _traced(agent, img.name) == 1
                  and agent.value("pyhttp2probe_attached_processes") == 1,
                  what=f"{image.name} traced")
            other = second if image == first else first
            assert _traced(agent, other.name) == 0  # the old image's plan was dropped
            proc.send(f"load {n}")
            assert proc.expect("LOADED") == ["LOADED", str(n), "0"]
            want[image.name] += n
            for name, w in want.items():  # only the image running now gets the new ones
                _wait(lambda name=name, w=w: _h2_counts(agent, name) == (w, w), timeout=10,
                      what=f"{name}: {w} requests, got {_h2_counts(agent, name)}")
        proc.finish()  # unharmed: every request answered 200, exit 0
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
        assert agent.value("pyhttp2probe_attach_errors_total") == 0
        assert agent.stop() == 0, agent.stderr


# -- 4. the agent SIGKILLed mid-load -----------------------------------------------------------
def test_agent_killed_mid_load_leaves_no_bpf_program_link_or_map_and_the_target_goes_on(
        tmp_path: Path) -> None:
    binary = _copy(_grpcwork(), tmp_path, "agent-killed")
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    agent = _agent()
    try:
        with start_workload(binary, ["-servers", "2", "-goroutines", "16", "-rpcs", "400",
                                     "-truth", ct, "-server-truth", st, "-hold"]) as wl:
            _wait(lambda: _traced(agent, binary.name) == 1, what="traced")
            wl.go()
            _wait(lambda: sum(agent.counts(CLIENT).values()) > 500, timeout=60,
                  what="calls flowing")
            held = agent.bpf_ids()
            assert held["prog"] and held["link"] and held["map"]
            assert agent.kill() == -9
            wl.wait_done(120)
            summary = wl.finish()  # exit 0
    finally:
        agent.stop()
    rows = read_truth(ct)
    assert summary is not None and len(rows) == summary["total"] > 12_000
    assert summary["code_mismatch"] == 0
    assert len(read_truth(st)) == summary["server_handled"]

    def left() -> dict[str, set[int]]:
        return {"prog": held["prog"] & {p["id"] for p in _bpftool("prog", "show")},
                "link": held["link"] & {ln["id"] for ln in _bpftool("link", "show")},
                "map": held["map"] & {m["id"] for m in _bpftool("map", "show")}}

    # The kernel frees them once the last fd closes (and an RCU grace period passes).
    deadline = time.monotonic() + 10
    while any((remain := left()).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remain == {"prog": set(), "link": set(), "map": set()}


# -- 6. bad inputs ---------------------------------------------------------------------------
def _log_lines(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# How long each short-lived process lives: from "gone before the agent reads /proc" to
# "gone in the middle of the attach" (planning, map writes, links take a few ms each).
VANISH_AFTER_MS = (0, 1, 2, 3, 5, 8, 12, 20, 30, 45) * 4


def test_bad_inputs_each_refused_with_a_reason_while_a_good_target_is_traced_exactly(
        tmp_path: Path) -> None:
    not_go = _copy(Path(shutil.which("sleep") or "/bin/sleep"), tmp_path, "not-go")
    no_probes = _copy(build(GoBuild(src="calltarget")), tmp_path, "no-probes")
    go116 = _copy(build(GoBuild(src="h2exec", env=(("GOTOOLCHAIN", "go1.16.15"),))),
                  tmp_path, "go116")
    # grpc-go v1.34.0 is older than every version in the shipped offsets table, and
    # stripped there is no DWARF either: no offsets the agent could trust.
    odd = _copy(build(GoBuild(src="grpcmethods", mod="faultmods/v1.34.0", ldflags="-s -w")),
                tmp_path, "stripped-grpc-v1.34")
    vanish = _copy(build(GoBuild(src="h2exec")), tmp_path, "vanish")
    good = _copy(_grpcwork(), tmp_path, "good")
    refused = {"not_go": 1, "no_probes": 1, "unsupported": 2}
    with _agent() as agent:
        # what the node had before this test's processes (e.g. a pid 1 whose exe even root
        # cannot read counts as permission): the test counts only what it adds
        skipped_before = {s["reason"]: v for s, v in agent.samples(
            "pyhttp2probe_skipped_processes_total")}
        wl, ct, st = _start_exact(good, tmp_path, "good", extra=("-rpcs", "150"))
        with wl:
            _wait(lambda: _traced(agent, good.name) == 1, what="good traced")
            wl.go()
            stdin = {"stdin": subprocess.PIPE, "stdout": subprocess.DEVNULL, "text": True}
            bad = {"not_go": subprocess.Popen([str(not_go), "60"]),
                   "no_probes": subprocess.Popen([str(no_probes), "calls", "1"], **stdin),
                   "go116": subprocess.Popen([str(go116)], **stdin),
                   "odd": subprocess.Popen([str(odd), "-methods", "0", "-wait-start"], **stdin)}
            try:
                vanished = set()
                for ms in VANISH_AFTER_MS:
                    p = subprocess.Popen([str(vanish), "-exit-after", f"{ms}ms"])
                    vanished.add(p.pid)
                    assert p.wait(timeout=10) == 0
                _wait(lambda: agent.value("pyhttp2probe_attach_errors_total") >= 4,
                      what="the four refusals")
                time.sleep(1.5)  # the loop has judged every exec by now
                errors = {s["reason"]: v for s, v in agent.samples(
                    "pyhttp2probe_attach_errors_total") if v}
                skipped = {r: n for s, v in agent.samples("pyhttp2probe_skipped_processes_total")
                           if (n := v - skipped_before.get(r := s["reason"], 0))}
                assert agent.value("pyhttp2probe_attached_processes") == 1  # the good one
                for p in bad.values():
                    assert p.poll() is None  # still running: refused, never touched
                # unharmed: each goes on to finish its own work and exits 0
                for name, line in (("no_probes", "go"), ("odd", "go"), ("go116", "quit")):
                    bad[name].communicate(line + "\n", timeout=30)
                    assert bad[name].returncode == 0, name
            finally:
                for p in bad.values():
                    p.kill()
                    p.wait()
            wl.wait_done(120)
            wl.finish()
        _assert_counts(agent, good.name, read_truth(ct), read_truth(st))
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
        assert agent.stop() == 0, agent.stderr
    # Each refusal is counted by its reason, once per process, and the vanished processes
    # the agent had begun to judge say no_process — never "attach" or "internal".
    gone = errors.pop("no_process", 0)
    assert errors == refused
    assert skipped == {**refused, **({"no_process": gone} if gone else {})}
    # ... and each is one warning naming the process, its binary and why.
    warned = collections.defaultdict(list)
    for rec in _log_lines(agent.stderr):
        if rec.get("level") in ("warning", "error"):
            assert rec.get("event") == "attach failed", rec
            warned[rec["pid"]].append(rec)
    why = {"not_go": "not a Go program", "no_probes": "neither grpc-go nor HTTP/2",
           "go116": "go1.16.15", "odd": "google.golang.org/grpc v1.34.0"}
    for name, p in bad.items():
        (rec,) = warned.pop(p.pid)
        assert why[name] in rec["error"], rec
        assert rec["reason"] == {"go116": "unsupported", "odd": "unsupported"}.get(name, name)
    assert set(warned) <= vanished
    assert all(r["reason"] == "no_process" for rs in warned.values() for r in rs)
    assert sum(len(rs) for rs in warned.values()) == gone
    # Some of them exited in the middle of their attach (the path that used to say
    # "attach"); the others were gone before the agent could read what they ran.
    assert gone >= 1


# -- 5. a tiny ring buffer under load ----------------------------------------------------------
def test_tiny_ring_buffer_loses_only_counted_records_and_is_exact_again_once_load_drops(
        tmp_path: Path) -> None:
    """Spans counted + ringbuf drops = calls, exactly. Every gRPC call is one record on each
    side (client end, server end), and each lost record is one failed reservation; /metrics
    sums drops over the BPF objects, so the equation is written over both sides together
    (with no client-side abandons and no nesting, both sides have exact truth)."""
    burst = _copy(_grpcwork(), tmp_path, "burst")
    calm = _copy(_grpcwork(), tmp_path, "calm")
    with _agent("--ring-size", "8192") as agent:  # ~23 client or ~30 server records
        ct, st = tmp_path / "burst-client.jsonl", tmp_path / "burst-server.jsonl"
        with start_workload(burst, ["-servers", "2", "-goroutines", "16", "-rpcs", "100",
                                    "-delay-max", "0", "-client-failures", "0", "-nested", "0",
                                    "-truth", ct, "-server-truth", st, "-hold"]) as wl:
            _wait(lambda: _traced(agent, burst.name) == 1, what="burst traced")
            wl.go()
            wl.wait_done(120)
            wl.finish()
        calls = len(read_truth(ct)) + len(read_truth(st))

        def seen() -> float:
            return (sum(agent.counts(CLIENT, service_name=burst.name).values())
                    + sum(agent.counts(SERVER, service_name=burst.name).values()))

        # drops are read from the kernel once a second: wait for the sum to settle
        drops = _wait(lambda: (d := agent.value("pyhttp2probe_ringbuf_drops_total"))
                      and seen() + d == calls and d, timeout=10,
                      what=f"spans {seen()} + drops == {calls} calls")
        assert 0 < drops < calls  # the ring really overflowed, and only partly
        assert agent.value("pyhttp2probe_unmatched_total") == 0
        # Load drops: one call at a time, 0-40 ms each (the ring holds ~0.5 s of records)
        # is exact again.
        ct2, st2 = tmp_path / "calm-client.jsonl", tmp_path / "calm-server.jsonl"
        with start_workload(calm, ["-servers", "1", "-goroutines", "1", "-rpcs", "40",
                                   "-delay-max", "40ms", "-client-failures", "0",
                                   "-nested", "0", "-errors", "0.25", "-truth", ct2,
                                   "-server-truth", st2, "-hold"]) as wl:
            _wait(lambda: _traced(agent, calm.name) == 1, what="calm traced")
            wl.go()
            wl.wait_done(120)
            wl.finish()
        for metric, rows in ((CLIENT, read_truth(ct2)), (SERVER, read_truth(st2))):
            want = _by_method(rows)
            assert _wait_counts(agent, metric, want, service_name=calm.name) == want, metric
        time.sleep(1.5)  # one more kernel-counter read
        assert agent.value("pyhttp2probe_ringbuf_drops_total") == drops
        assert agent.stop() == 0, agent.stderr


# -- 7. thousands of method names from a peer --------------------------------------------------
def test_thousands_of_method_names_are_capped_folded_and_counted_with_bounded_memory(
        tmp_path: Path) -> None:
    binary = _copy(build(GoBuild(src="grpcmethods")), tmp_path, "methods")
    n, cap = 5000, 1000  # --max-label-sets defaults to 1000
    with _agent() as agent:
        rss_before = agent.rss_kb()
        with start_workload(binary, ["-methods", str(n), "-hold"]) as wl:
            _wait(lambda: _traced(agent, binary.name) == 1, what="traced")
            wl.go()
            wl.wait_done(120)
            wl.finish()
        # each made-up method: one client and one server call, both Unimplemented (12)
        series = []

        def total() -> float:
            series[:] = [(m, s, v) for m in (CLIENT, SERVER)
                         for s, v in agent.samples(f"{m}_count")]
            return sum(v for _, _, v in series)

        _wait(lambda: total() == 2 * n, timeout=30, what=f"{2 * n} calls counted")
        other = [(m, s, v) for m, s, v in series if s["rpc_method"] == "_OTHER"]
        named = [(m, s, v) for m, s, v in series if s["rpc_method"] != "_OTHER"]
        # the first `cap` label sets are kept, one call each; every later one is folded
        # into one _OTHER set per histogram (same status, address, service_name)
        assert len(named) == cap and all(v == 1 for _, _, v in named)
        assert sorted(m for m, _, _ in other) == [CLIENT, SERVER]
        assert all(s["rpc_service"] == "_OTHER" and s["rpc_grpc_status_code"] == "12"
                   for _, s, _ in other)
        folded = agent.value("pyhttp2probe_label_sets_folded_total")
        assert folded == sum(v for _, _, v in other) == 2 * n - cap
        grown_mb = (agent.rss_kb() - rss_before) / 1024
        # 10,000 spans and 1,002 histograms are a few MB of Python objects; 100 MB would
        # mean the excess is kept somewhere after all.
        assert grown_mb < 100, f"agent RSS grew {grown_mb:.0f} MB"
        assert agent.stop() == 0, agent.stderr


# -- 8. processes of one binary started and stopped in a loop ---------------------------------
# Eight rounds: glibc's arenas and Python's allocator warm up over the first few; the last
# TAIL_ROUNDS must show the level (see the memory test).
ROUNDS, PER_ROUND, TAIL_ROUNDS = 8, 10, 3


@pytest.fixture(scope="module")
def loop_rounds(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Processes of one binary, PER_ROUND at a time for ROUNDS rounds: after each round
    (all exited, detached, every call counted) the agent's BPF ids, fd count and RSS. The
    first entry is the idle agent (before any process).

    The program is grpcdemo listening on one of PER_ROUND fixed ports, the same ports each
    round: every round then has the same label sets, so whatever the agent still holds
    after a round is held per process, not per series (series are kept on purpose)."""
    tmp = tmp_path_factory.mktemp("loop")
    binary = _copy(build(GoBuild(src="grpcdemo")), tmp, "loop")
    ports = [free_port() for _ in range(PER_ROUND)]

    def state() -> dict[str, Any]:
        ids = agent.bpf_ids()
        return {**ids, "fds": agent.fd_count(), "rss_kb": agent.rss_kb(),
                "series": len(agent.counts(CLIENT)) + len(agent.counts(SERVER))}

    with _agent() as agent:
        out = [state()]
        calls = 0
        for _ in range(ROUNDS):
            wls = [start_workload(binary, ["-listen", f"127.0.0.1:{port}", "-duration",
                                           "300ms", "-qps", "200", "-hold"]) for port in ports]
            try:
                _wait(lambda: _traced(agent, binary.name) == PER_ROUND, timeout=30,
                      what=f"{PER_ROUND} traced")
                for wl in wls:
                    wl.go()
                for wl in wls:
                    wl.wait_done(60)
                    calls += int((wl.finish() or {})["total"])
            finally:
                for wl in wls:
                    wl.kill()
            assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
            _wait(lambda n=calls: sum(agent.counts(
                CLIENT, service_name=binary.name).values()) == n, timeout=10,
                what="every call counted")
            out.append(state())
        assert agent.stop() == 0, agent.stderr
    return out


def test_fifty_processes_started_and_stopped_in_a_loop_leave_no_bpf_link_or_fd_behind(
        loop_rounds: list[dict[str, Any]]) -> None:
    idle, first, last = loop_rounds[0], loop_rounds[1], loop_rounds[-1]
    # Every process's links went with it: only discovery's exec and exit tracepoints stay.
    assert len(idle["link"]) == 2
    assert [r["link"] for r in loop_rounds] == [idle["link"]] * (ROUNDS + 1)
    # The objects loaded once are the same ones throughout: no program or map per process.
    assert all(r["prog"] == idle["prog"] and r["map"] == idle["map"] for r in loop_rounds)
    # fds: objects, ring buffers, epoll, the HTTP listener; nothing per process. A scrape's
    # socket may be open at the moment of counting: allow 2.
    assert last["fds"] - first["fds"] <= 2, [r["fds"] for r in loop_rounds]


def test_fifty_processes_started_and_stopped_in_a_loop_leave_no_memory_growth(
        loop_rounds: list[dict[str, Any]]) -> None:
    """Memory levels off: the allocator warms up over the first rounds, then what the
    last TAIL_ROUNDS rounds of PER_ROUND processes add must be noise, not a copy of
    anything per process (one plan is about a MB)."""
    series = [r["series"] for r in loop_rounds[1:]]
    assert len(set(series)) == 1, f"the same label sets every round: {series}"
    rss = [r["rss_kb"] / 1024 for r in loop_rounds]
    tail = rss[-1] - rss[-TAIL_ROUNDS - 1]
    assert tail < 2.0, f"agent RSS still grew {tail:.1f} MB over the last {TAIL_ROUNDS} " \
        f"rounds of {PER_ROUND} processes: {[round(x, 1) for x in rss]} MB"
