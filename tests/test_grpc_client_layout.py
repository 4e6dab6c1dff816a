"""The Python side of the gRPC client probes: layouts from events.h, span fields, metrics.

Fast tests without a traced program; the accuracy tests cover the probes end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench.bpfbuild import build_object
from pyhttp2probe.events import EventDecoder, Layout
from pyhttp2probe.metrics import RpcMetrics
from pyhttp2probe.spans import parse_target, span_from_event, split_method

ROOT = Path(__file__).resolve().parent.parent
BPF = ROOT / "pyhttp2probe" / "bpf"
OLDKEY_SRC = ROOT / "bench" / "bpf" / "grpc_client_oldkey.bpf.c"  # the bench's ablation


def test_config_struct_python_sees_is_the_one_the_bpf_object_was_built_with() -> None:
    from libbpf_loader import BpfObject

    layout = Layout()
    for path in (BPF / "grpc_client.bpf.o", build_object(OLDKEY_SRC)):
        obj = BpfObject.open(path)
        try:
            m = obj.map("grpc_client_config")
            assert m.value_size == layout.sizeof("grpc_client_config")
        finally:
            obj.close()


def test_batch_of_records_decodes_with_peer_method_and_target() -> None:
    layout = Layout()
    ev = layout.new("grpc_client_event")
    ev.type = layout.constants["EV_GRPC_CLIENT"]
    ev.tgid, ev.transport, ev.stream_id, ev.status_code = 42, 0xC000, 7, 14
    ev.start_ns, ev.end_ns = 1_000, 51_000
    method = b"/pkg.Svc/Do"
    ev.method = method
    ev.method_len = len(method)
    ev.peer_ip[10:16] = [0xFF, 0xFF, 10, 0, 0, 9]
    ev.peer_port = 8443
    raw = layout.to_bytes(ev)
    (got,) = EventDecoder(layout).decode_buffer(raw)
    assert (got.tgid, got.stream_id, got.status_code) == (42, 7, 14)
    assert (got.peer_ip, got.peer_port, got.method) == ("10.0.0.9", 8443, "/pkg.Svc/Do")
    span = span_from_event(got, layout.constants, "client")
    assert (span.service, span.method, span.duration_s) == ("pkg.Svc", "Do", 50e-6)
    assert span.key == (42, 0xC000, 7)


@pytest.mark.parametrize(("target", "want"), [
    ("127.0.0.1:5000", ("127.0.0.1", 5000)),
    ("dns:///svc.local:443", ("svc.local", 443)),
    ("passthrough:///10.1.2.3:81", ("10.1.2.3", 81)),
    ("[::1]:9000", ("::1", 9000)),
    # Unix sockets: no host, no port, like a connected call over the socket reports
    ("unix:/tmp/s.sock", ("", 0)),
    ("unix:///tmp/s.sock", ("", 0)),
    ("unix://authority/tmp/s.sock", ("", 0)),
    ("unix-abstract:name", ("", 0)),
])
def test_dial_targets_of_calls_without_a_connection_give_the_peer(
        target: str, want: tuple[str, int]) -> None:
    assert parse_target(target) == want


def test_split_method() -> None:
    assert split_method("/a.b.Svc/M") == ("a.b.Svc", "M")
    assert split_method("odd") == ("", "odd")


def test_label_sets_beyond_the_cap_fold_into_other() -> None:
    layout = Layout()
    registry = CollectorRegistry()
    metrics = RpcMetrics(max_label_sets=3, registry=registry)
    dec = EventDecoder(layout)
    spans = []
    for i in range(10):
        ev = layout.new("grpc_client_event")
        ev.type, ev.transport, ev.stream_id = 1, 1, 2 * i + 1
        ev.start_ns, ev.end_ns = 1, 2
        m = f"/s.S/M{i}".encode()
        ev.method, ev.method_len = m, len(m)
        spans.append(span_from_event(dec.decode_buffer(layout.to_bytes(ev))[0],
                                     layout.constants, "x"))
    metrics.observe_spans(spans)
    text = generate_latest(registry).decode()
    counts = [ln for ln in text.splitlines() if ln.startswith("rpc_client_duration_seconds_count")]
    assert len(counts) == 4  # 3 real label sets + _OTHER
    assert any('rpc_method="_OTHER"' in ln and ln.endswith(" 7.0") for ln in counts)
