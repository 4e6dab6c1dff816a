"""The ablation: grpc-go's old keying (http2Client.nextID read at NewStream's entry) as a
probe path of its own, loaded into an Agent beside nothing else.

Bench-only: its object is built from bench/bpf/ and never ships. It shows the probe-path
seam too: a path declared outside the package, with no change to the agent.
"""

from __future__ import annotations

from typing import Any

from pyhttp2probe.probes import ConfigEntry, PathSetup, ProbePath, ProcessImage, grpc_client
from pyhttp2probe.probes.planning import PlanFields, entry_point
from testkit.bpfbuild import ROOT, build_object

FN_NEWSTREAM = grpc_client.TRANSPORT + ".(*http2Client).NewStream"
NEXT_ID = grpc_client.TRANSPORT + ".http2Client.nextID"


def _setup(proc: ProcessImage, layout: Any) -> PathSetup:
    """The client path's config plus nextID; start at NewStream's entry instead."""
    ours = grpc_client.setup(proc, layout)
    (entry,) = ours.configs
    cfg = layout.new("grpc_client_config")
    layout.ffi.memmove(cfg, entry.value, len(entry.value))
    cfg.ct_next_id = PlanFields(proc.plan)[NEXT_ID]
    points = [entry_point(proc.plan, "oldkey_start", FN_NEWSTREAM),
              entry_point(proc.plan, "oldkey_end", grpc_client.FN_END)]
    return PathSetup([ConfigEntry(entry.map, entry.key, layout.to_bytes(cfg))], points,
                     ours.notes, "nextID at NewStream entry")


def oldkey_path() -> ProbePath:
    obj = build_object(ROOT / "bench" / "bpf" / "grpc_client_oldkey.bpf.c")
    base = grpc_client.PATH
    return ProbePath(
        name="grpc_client_oldkey", object=str(obj),
        functions=(*base.functions, FN_NEWSTREAM), fields=(*base.fields, NEXT_ID),
        setup=_setup, records=base.records, anchors=base.anchors,
        in_flight_maps=("oldkey_inflight",), stages=base.stages)
