"""The Python side of the probes: layouts from events.h/config.h, decoding, span fields,
metrics.

Fast tests without a traced program; the accuracy tests cover the probes end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pyhttp2probe.decode import Decoder
from pyhttp2probe.metrics import RpcMetrics
from pyhttp2probe.probes import all_paths
from pyhttp2probe.records import DecodeContext, load_layout
from pyhttp2probe.spans import Span, parse_target, split_method
from testkit.batches import make_batch

BPF = Path(__file__).resolve().parent.parent / "pyhttp2probe" / "bpf"
CONFIG_MAPS = {"grpc_client": "grpc_client_config", "grpc_server": "grpc_server_config",
               "http2": "http2_config"}


def _decode(layout, records: list[bytes]) -> list[Span]:  # type: ignore[no-untyped-def]
    ctx = DecodeContext(layout, lambda pid: "client")
    return Decoder(layout, all_paths(), ctx).decode(make_batch(records))


def test_config_structs_python_sees_are_the_ones_the_bpf_objects_were_built_with() -> None:
    """Each config map holds the struct Python writes, and its slot table (config_table.py)
    a u64 key followed by that struct."""
    from libbpf_loader import BpfObject

    layout = load_layout()
    for path in all_paths():
        obj = BpfObject.open(BPF / path.object)
        try:
            name = CONFIG_MAPS[path.name]
            assert obj.map(name).value_size == layout.sizeof(name), path.name
            assert obj.map(f"{name}_slots").value_size == 8 + layout.sizeof(name), path.name
        finally:
            obj.close()


def test_batch_of_records_decodes_with_peer_method_and_target() -> None:
    layout = load_layout()
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
    (span,) = _decode(layout, [raw])
    assert (span.pid, span.stream_id, span.status_code) == (42, 7, 14)
    assert (span.server_address, span.server_port, span.full_method) == (
        "10.0.0.9", 8443, "/pkg.Svc/Do")
    assert (span.service, span.method, span.duration_s) == ("pkg.Svc", "Do", 50e-6)
    assert span.key == (42, 0xC000, 7)
    assert span.service_name == "client"


def test_mixed_batches_decode_every_record_type_and_count_unknown_ones() -> None:
    layout = load_layout()
    client = layout.new("grpc_client_event")
    client.type, client.tgid, client.transport, client.stream_id = (
        layout.constants["EV_GRPC_CLIENT"], 7, 1, 3)
    h2 = layout.new("http2_event")
    h2.type, h2.tgid, h2.conn, h2.stream_id, h2.status = (
        layout.constants["EV_HTTP2_SERVER"], 7, 2, 5, 404)
    h2.flags = layout.constants["SPAN_F_ERROR"] | layout.constants["SPAN_F_PANIC"]
    junk = (999).to_bytes(4, "little") + bytes(60)
    ctx = DecodeContext(layout)
    dec = Decoder(layout, all_paths(), ctx)
    spans = dec.decode(make_batch([layout.to_bytes(client), junk, layout.to_bytes(h2),
                               layout.to_bytes(client)]))
    assert sorted(s.kind for s in spans) == ["grpc_client", "grpc_client", "http_server"]
    (srv,) = [s for s in spans if s.kind == "http_server"]
    assert (srv.connection, srv.stream_id, srv.status_code) == (2, 5, 404)
    assert set(srv.flags) == {"error", "panic"}
    assert dec.unknown == 1


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
    layout = load_layout()
    registry = CollectorRegistry()
    metrics = RpcMetrics(max_label_sets=3, registry=registry)
    records = []
    for i in range(10):
        ev = layout.new("grpc_client_event")
        ev.type, ev.transport, ev.stream_id = layout.constants["EV_GRPC_CLIENT"], 1, 2 * i + 1
        ev.start_ns, ev.end_ns = 1, 2
        m = f"/s.S/M{i}".encode()
        ev.method, ev.method_len = m, len(m)
        records.append(layout.to_bytes(ev))
    metrics.observe_spans(_decode(layout, records))
    text = generate_latest(registry).decode()
    counts = [ln for ln in text.splitlines() if ln.startswith("rpc_client_duration_seconds_count")]
    assert len(counts) == 4  # 3 real label sets + _OTHER
    assert any('rpc_method="_OTHER"' in ln and ln.endswith(" 7.0") for ln in counts)
