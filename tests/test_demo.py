"""The README's first command works: the demo traces a real Go program and prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("demo.Greeter/SayBye", "demo.Greeter/SayHello", "demo.Store/Get",
           "demo.Store/List", "demo.Store/Put")


def _table(out: str, side: str) -> dict[str, int]:
    block = out.split(f"{side} side, as the agent saw it", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in block.splitlines()[2:]:
        m = re.match(r"(\S+)\s+(\d+)\s", line)
        if m:
            rows[m.group(1)] = int(m.group(2))
    return rows


def test_demo_prints_per_method_table_from_its_own_metrics() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "testkit.demo", "--duration", "3", "--qps", "200",
         "--listen", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"metrics at http://127\.0\.0\.1:\d+/metrics", proc.stdout)
    client, server = _table(proc.stdout, "client"), _table(proc.stdout, "server")
    assert set(client) == set(METHODS), proc.stdout
    # Client and server spans of the same calls, counted by the agent on both ends.
    assert client == server
    # ...and they are exactly the calls the program says it made, errors included.
    agent = re.search(r"agent: (\d+) client calls \((\d+) errors\), 0 unmatched", proc.stdout)
    program = re.search(r"program: (\d+) client calls \((\d+) errors\)", proc.stdout)
    assert agent and program, proc.stdout
    assert agent.groups() == program.groups()
    assert sum(client.values()) == int(agent.group(1)) > 0
