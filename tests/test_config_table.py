"""Per-process configs in two tiers (bpf_src/common.h CONFIG_MAPS, config_table.py): a slot
by hash of the process's key, else the object's hash map.

Proved on real maps and real probes: a process whose slot another holds is traced exactly
like one in its slot; a freed slot keeps its bytes under key 0 and is reused only after the
grace period; a process never has a copy in both tiers.
"""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import ExitStack
from pathlib import Path

from libbpf_loader import BpfObject
from pyhttp2probe import Agent
from pyhttp2probe.config_table import GRACE_S, ConfigTable, slot_of
from pyhttp2probe.probes import ProbePath, all_paths
from pyhttp2probe.records import load_layout
from testkit.bpfbuild import BPF_SRC, build_object
from testkit.workload import read_truth
from tests.test_agent import NEWEST, _assert_one_to_one, _go_and_drain, _grpcwork, _start
from tests.test_grpc_client_layout import CONFIG_MAPS

BPF = Path(__file__).resolve().parent.parent / "pyhttp2probe" / "bpf"


def _two_slot_paths() -> tuple[ProbePath, ...]:
    out = []
    for p in all_paths():
        src = BPF_SRC / p.object.removesuffix(".o").replace(".bpf", ".bpf.c")
        out.append(dataclasses.replace(p, object=str(build_object(src, ("CONFIG_SLOT_BITS=1",)))))
    return tuple(out)


def test_processes_sharing_a_two_slot_config_table_are_each_traced_exactly() -> None:
    binary = _grpcwork(NEWEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        runs = [_start(stack, binary, tmp, f"c{i}") for i in range(4)]
        with Agent(paths=_two_slot_paths()) as agent:
            for wl, _, _ in runs:
                agent.attach(wl.pid)
            tiers = {name: [agent.config_table(name, m).in_slot(wl.pid.to_bytes(4, "little"))
                            for wl, _, _ in runs]
                     for name, m in CONFIG_MAPS.items() if name != "http2"}
            stats = _go_and_drain(agent, runs)
        spans = list(agent.spans(timeout=0.2))
        for wl, ct, st in runs:
            mine = [s for s in spans if s.pid == wl.pid]
            _assert_one_to_one(mine, read_truth(ct), read_truth(st), f"pid {wl.pid}")
            wl.finish()
    for name, in_slot in tiers.items():  # 4 processes, 2 slots: both tiers in use
        assert 1 <= sum(in_slot) <= 2, (name, in_slot)
    for side in ("grpc_client", "grpc_server"):
        assert stats[f"{side}.no_config"] == 0, stats
        assert stats[f"{side}.unmatched_end"] == 0, stats


def _colliding_keys(bits: int, n: int) -> list[bytes]:
    """n tgid keys that share one slot of a 1 << bits table."""
    want = slot_of(1000, bits)
    keys = [k for k in range(1000, 1 << 22) if slot_of(k, bits) == want][:n]
    return [k.to_bytes(4, "little") for k in keys]


def test_freed_slot_waits_out_the_grace_period_and_no_process_is_in_both_tiers() -> None:
    layout = load_layout()
    size = layout.sizeof("grpc_server_config")
    now = [100.0]
    with BpfObject.open(BPF / "grpc_server.bpf.o") as obj:
        obj.load()
        hash_map, slots = obj.map("grpc_server_config"), obj.map("grpc_server_config_slots")
        table = ConfigTable(hash_map, slots, clock=lambda: now[0])
        bits = slots.max_entries.bit_length() - 1
        a, b, c = _colliding_keys(bits, 3)
        idx = slot_of(int.from_bytes(a, "little"), bits)
        cfg = {k: bytes([i + 1]) * size for i, k in enumerate((a, b, c))}

        table.write(a, cfg[a])
        raw = slots.lookup(idx)
        assert raw is not None and raw[:8] == a.ljust(8, b"\0") and raw[8:8 + size] == cfg[a]
        assert hash_map.lookup(a) is None and table.read(a) == cfg[a]

        table.write(b, cfg[b])  # a holds the slot: b goes to the hash map
        assert not table.in_slot(b) and hash_map.lookup(b) == cfg[b]

        table.delete(a)  # freed: key 0, the bytes stay for a probe still reading them
        raw = slots.lookup(idx)
        assert raw is not None and raw[:8] == bytes(8) and raw[8:8 + size] == cfg[a]
        assert table.read(a) is None

        table.write(c, cfg[c])  # within the grace period: not in a's old slot
        assert not table.in_slot(c) and hash_map.lookup(c) == cfg[c]
        now[0] += GRACE_S
        table.write(b, cfg[b])  # b stays where it is, even with the slot free now
        assert not table.in_slot(b) and hash_map.lookup(b) == cfg[b]
        table.delete(c)
        assert hash_map.lookup(c) is None
        table.write(c, cfg[c])  # re-attached after the grace period: the slot
        assert table.in_slot(c) and hash_map.lookup(c) is None and table.read(c) == cfg[c]
