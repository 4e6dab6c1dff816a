"""Soak: the node service for ≥ 10 minutes under steady traffic and process turnover, its
RSS and CPU sampled over time. Not in CI (it takes minutes by design).

`python3 bench/soak.py [--minutes 10]` replaces the "## Soak" section of BENCHMARKS.md
(bench/run.py keeps that section when it rewrites the rest).

A gRPC program (grpcdemo, 500 RPC/s, client and server in one process, both traced) runs
for 60 s at a time and is started again at once, so the agent sees an exec, an attach, a
stream of spans, an exit and a detach every minute, plus a steady 1,000 spans/s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.agentproc import AgentProcess  # noqa: E402
from testkit.gobuild import GoBuild, build  # noqa: E402

SAMPLE_S = 30.0
SECTION = "## Soak"


def _rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def soak(minutes: float) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / f"soak-{os.getpid()}-grpcdemo"
        shutil.copy2(build(GoBuild(src="grpcdemo")), binary)
        with AgentProcess(["--exe", binary.name, "--log-level", "warning"]) as agent:
            pid = agent.proc.pid
            start = time.monotonic()
            end = start + minutes * 60
            workload: subprocess.Popen[bytes] | None = None
            runs = 0
            last_cpu, last_t = _cpu_s(pid), start
            next_sample = start + SAMPLE_S
            while time.monotonic() < end:
                if workload is None or workload.poll() is not None:
                    workload = subprocess.Popen(
                        [str(binary), "-duration", "60s", "-qps", "500"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    runs += 1
                time.sleep(0.5)
                now = time.monotonic()
                if now >= next_sample:
                    cpu = _cpu_s(pid)
                    spans = agent.value("rpc_client_duration_seconds_count")
                    rows.append((now - start, _rss_mib(pid), 100 * (cpu - last_cpu) /
                                 (now - last_t), spans, runs))
                    last_cpu, last_t = cpu, now
                    next_sample = now + SAMPLE_S
            if workload is not None:
                workload.wait(timeout=90)
            drops = agent.value("pyhttp2probe_ringbuf_drops_total")
    first, last = rows[0], rows[-1]
    half = len(rows) // 2
    level = [(min(r[1] for r in part), max(r[1] for r in part))
             for part in (rows[:half], rows[half:])]
    table = [f"| {t / 60:5.1f} min | {rss:6.1f} MiB | {cpu:5.1f} % | {spans:,.0f} | {n} |"
             for t, rss, cpu, spans, n in rows]
    return "\n".join([
        f"{SECTION} (`python3 bench/soak.py --minutes {minutes:g}`, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)",
        "",
        "The agent (`run --exe`) tracing a gRPC program (client and server in one process, "
        "500 RPC/s, so ~1,000 spans/s) that exits and is started again every 60 s. Sampled "
        f"every {SAMPLE_S:.0f} s: the agent's RSS, its CPU (% of one core since the last "
        "sample), client calls counted so far, program runs so far.",
        "",
        "| time | agent RSS | agent CPU | client calls | program runs |",
        "|---|---|---|---|---|",
        *table,
        "",
        f"RSS {first[1]:.1f} → {last[1]:.1f} MiB over {last[0] / 60:.1f} min; lowest / "
        f"highest sample, first half {level[0][0]:.1f} / {level[0][1]:.1f} MiB, second half "
        f"{level[1][0]:.1f} / {level[1][1]:.1f} MiB (each restart's series, on a new port, "
        "stay for --series-ttl, 5 min by default; the heap is trimmed every 10 s); "
        f"ring-buffer drops {drops:.0f}.",
    ])


def replace_section(text: str, section: str) -> str:
    """BENCHMARKS.md with its soak section (always the last one) replaced or appended."""
    start = text.find(SECTION)
    head = text[:start] if start >= 0 else text
    return head.rstrip("\n") + "\n\n" + section + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    section = soak(args.minutes)
    out = Path(args.out)
    out.write_text(replace_section(out.read_text() if out.exists() else "", section))
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
