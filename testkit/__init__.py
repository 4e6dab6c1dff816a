"""The test kit: what the tests, the benchmarks and the demo share (never shipped).

- gobuild: build the Go workloads kept under tests/go (cached by content).
- workload: start a workload, drive its stdin handshake, read the ground truth it writes.
- traced: run a workload under an Agent and collect spans, run counts, kernel counters.
- client_match, traced.match_one_to_one: one-to-one matching of spans to ground truth.
- demo: the README's main job (`make demo`).
"""
