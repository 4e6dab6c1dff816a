"""Agent end to end: trace a Go gRPC program, iterate its spans, read the agent's metrics.

The program is tests/go/grpcdemo: one process serving two gRPC services and calling them
for a few seconds, ~5% of calls answered with an error. It starts with -wait-start (prints
`READY <pid>`, waits for a line before its first call), so the agent attaches first. Run
it from the repository root, as root: `PYTHONPATH=. python3 docs/examples/agent_grpc.py`.
"""

import sys
from collections import Counter

import structlog
from prometheus_client import CollectorRegistry, generate_latest

from pyhttp2probe import Agent
from testkit.gobuild import GoBuild, build
from testkit.workload import start_workload

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # logs aside


def sample_total(registry: CollectorRegistry, name: str) -> float:
    """Sum of every sample called `name` (all label sets) in the registry."""
    return sum(s.value for family in registry.collect() for s in family.samples
               if s.name == name)


binary = build(GoBuild(src="grpcdemo"))  # go build of tests/go/grpcdemo; cached
registry = CollectorRegistry()  # the agent's own: the global REGISTRY stays untouched
clients: Counter[str] = Counter()
servers: Counter[str] = Counter()
errors = 0

with start_workload(binary, ["-duration", "2s", "-qps", "200", "-hold"]) as workload, \
        Agent(registry=registry) as agent:  # BPF objects loaded once, here
    # Plan the binary, write the process's config, attach its uprobes; idempotent.
    agent.attach(workload.pid, service_name="grpcdemo")  # default: from its environment
    print(f"tracing pid {workload.pid}: targets {sorted(agent.targets)}")
    workload.go()  # the program starts calling now
    for span in agent.spans(timeout=1.0):  # live; ends after 1 s without a span
        if span.kind == "grpc_client":
            clients[span.full_method] += 1
            errors += span.status_code != 0
        elif span.kind == "grpc_server":
            servers[span.full_method] += 1
        if clients.total() + servers.total() <= 4:
            print(f"  {span.kind:11} {span.full_method:24} code {span.status_code:2} "
                  f"{span.duration_s * 1e3:7.3f} ms  conn {span.connection:#x} "
                  f"stream {span.stream_id}")
    workload.wait_done(timeout=60)  # the program's calls had all ended (it holds)
    summary = workload.finish()  # its own count of what it did
    agent.drain()  # anything still in the ring buffers reaches the collector now
    exposition = generate_latest(registry).decode()  # what /metrics would serve
    totals = {name: sample_total(registry, name) for name in (
        "rpc_client_duration_seconds_count", "rpc_server_duration_seconds_count",
        "pyhttp2probe_events_total")}
# Leaving the block detached the program and unregistered the agent's collector.

for line in exposition.splitlines():
    if line.startswith("rpc_client_duration_seconds_count{") and \
            'rpc_method="SayHello"' in line and 'status_code="0"' in line:
        print(line)
for method, n in sorted(clients.items()):
    print(f"  {method:24} client {n:5}  server {servers[method]:5}")
print(f"spans: {clients.total()} grpc_client ({errors} errors), "
      f"{servers.total()} grpc_server, {agent.unmatched} unmatched")
print("registry: " + ", ".join(f"{name} {value:.0f}" for name, value in totals.items()))
print(f"program: {summary['total']} calls ({summary['errors']} errors), by its own count")
