"""Ring buffer batch semantics, driven by BPF_PROG_TEST_RUN (exact, deterministic counts)."""

from __future__ import annotations

import selectors
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from libbpf_loader import (
    PACKED_MAGIC,
    Batch,
    BpfObject,
    RingBuffer,
    ffi_from_header,
    struct_dtype,
)
from libbpf_loader.errors import ClosedError, MapError

ROOT = Path(__file__).resolve().parent.parent
CT = ffi_from_header(ROOT / "tests" / "bpf" / "calltrace.h")
RECORD = CT.sizeof("struct call_event")
PER_RUN = 16  # RECORDS_PER_RUN in tests/bpf/bench_ringbuf.bpf.c
PACKET = bytes(64)  # skb test runs need at least an Ethernet header


@pytest.fixture
def producer(bpf_objects: Callable[[str], Path]) -> Iterator[BpfObject]:
    with BpfObject.open(bpf_objects("bench_ringbuf")) as obj:
        obj.map("events").resize(1 << 20)
        yield obj.load()


def produce(obj: BpfObject, runs: int) -> None:
    obj.program("produce").test_run(PACKET, repeat=runs)


def test_one_callback_per_batch(producer: BpfObject) -> None:
    batches: list[Batch] = []
    rb = RingBuffer(producer.map("events"), batches.append)
    produce(producer, 10)
    assert rb.poll(1000) == 10 * PER_RUN
    assert len(batches) == 1 and len(batches[0]) == 10 * PER_RUN
    assert rb.consume() == 0 and len(batches) == 1, "no empty batches"


def test_batch_limit_splits_without_losing_records(producer: BpfObject) -> None:
    batches: list[Batch] = []
    rb = RingBuffer(producer.map("events"), batches.append, batch_limit=10 * RECORD)
    produce(producer, 20)
    while rb.consume():
        pass
    assert len(batches) > 1 and all(len(b) <= 10 for b in batches)
    dtype = struct_dtype(CT, "struct call_event")
    seq = np.concatenate([b.as_array(dtype)["ktime_ns"] for b in batches])
    assert seq.tolist() == list(range(20 * PER_RUN)), "every record, in order, once"


def test_records_decode_like_cffi(producer: BpfObject) -> None:
    batches: list[Batch] = []
    rb = RingBuffer(producer.map("events"), batches.append)
    produce(producer, 3)
    rb.poll(1000)
    (batch,) = batches
    assert batch.uniform_size == RECORD and batch.stride == RECORD
    arr = batch.as_array(struct_dtype(CT, "struct call_event"))
    for i, record in enumerate(batch):
        assert isinstance(record, memoryview) and len(record) == RECORD
        assert bytes(record) == batch.buffer[batch.offsets[i]:batch.offsets[i] + RECORD]
        ev = CT.from_buffer("struct call_event *", bytearray(record))
        assert (ev.tid, ev.rax, ev.rbx, ev.ktime_ns) == (
            arr["tid"][i], arr["rax"][i], arr["rbx"][i], arr["ktime_ns"][i]) == (
            i % PER_RUN, i % PER_RUN, 2 * (i % PER_RUN), i)
    assert [bytes(r) for r in batch[1:3]] == [bytes(batch[1]), bytes(batch[2])]


def test_callback_exception_surfaces_and_nothing_is_lost(producer: BpfObject) -> None:
    seen: list[int] = []

    def flaky(batch: Batch) -> None:
        seen.append(len(batch))
        if len(seen) == 1:
            raise RuntimeError("callback failed")

    rb = RingBuffer(producer.map("events"), flaky, batch_limit=4 * RECORD)
    produce(producer, 1)
    with pytest.raises(RuntimeError, match="callback failed"):
        rb.poll(1000)
    while rb.consume():
        pass
    assert sum(seen) == PER_RUN, "the failing batch was delivered; the rest still arrive"


def test_batch_buffer_outlives_the_callback(producer: BpfObject) -> None:
    kept: list[Batch] = []
    rb = RingBuffer(producer.map("events"), kept.append)
    produce(producer, 1)
    rb.poll(1000)
    first = bytes(kept[0][0])
    produce(producer, 50)  # the C batch buffer is reused and overwritten
    rb.poll(1000)
    assert isinstance(kept[0].buffer, bytes) and bytes(kept[0][0]) == first


def test_fileno_works_with_selectors(producer: BpfObject) -> None:
    got: list[int] = []
    with RingBuffer(producer.map("events"), lambda b: got.append(len(b))) as rb:
        sel = selectors.DefaultSelector()
        sel.register(rb, selectors.EVENT_READ)
        assert sel.select(0) == []
        produce(producer, 2)
        assert len(sel.select(1.0)) == 1
        rb.consume()
        sel.close()
    assert got == [2 * PER_RUN]
    with pytest.raises(ClosedError):
        rb.poll(0)


def test_maps_of_two_objects_drain_through_one_ring_buffer(
        bpf_objects: Callable[[str], Path], producer: BpfObject) -> None:
    got: list[int] = []
    with BpfObject.open(bpf_objects("bench_ringbuf")) as other:
        other.map("events").resize(1 << 20)
        other.load()
        rb = RingBuffer(producer.map("events"), lambda b: got.append(len(b)))
        rb.add(other.map("events"))
        with pytest.raises(MapError, match="not a ring buffer"):
            rb.add(producer.map(".bss"))
        produce(producer, 2)
        produce(other, 3)
        assert rb.consume() == 5 * PER_RUN  # one drain, records of both objects
        assert sum(got) == 5 * PER_RUN
    # closing either object frees the ring buffer first (it maps that object's memory)
    assert rb.closed
    with pytest.raises(ClosedError):
        rb.poll(0)


def test_a_backlog_forces_one_wakeup_per_eighth_of_the_ring(
        bpf_objects: Callable[[str], Path]) -> None:
    """bpf_src/common.h submit_batched: records go without a wakeup; once the unconsumed
    bytes reach 1/8 of the ring, one record per 1/8 of the ring produced forces one (not
    every record past the threshold, which cost ~1 us each). 64 KiB ring, 128-byte records
    (header included), nothing consumed: 448 records reach producer steps 1..7 of 8 KiB, at
    records 64, 128, ..., 448: exactly 7 wakeups, each seen by an edge-triggered epoll."""
    import select

    with BpfObject.open(bpf_objects("wake_ring")) as obj:
        obj.map("events").resize(64 * 1024)
        obj.load()
        prog = obj.program("produce_one")
        ep = select.epoll()
        ep.register(obj.map("events").fd, select.EPOLLIN | select.EPOLLET)
        woken_at = []
        try:
            for k in range(1, 449):
                assert prog.run_syscall(bytes(8)) == 0
                if ep.poll(0.002):  # the wakeup is an irq_work: give it a moment
                    woken_at.append(k)
        finally:
            ep.close()
    assert woken_at == [64 * i for i in range(1, 8)]


def test_packed_record_arrives_as_the_records_it_holds(producer: BpfObject) -> None:
    """A producer that sends several records in one reservation (bpf_src/stage.h) behind a
    packed header: the batch holds each as its own record, in order; a header claiming more
    than the record holds is not trusted (the record comes whole, for the reader to
    reject)."""
    batches: list[Batch] = []
    rb = RingBuffer(producer.map("events"), batches.append)
    producer.program("produce_packed").test_run(PACKET)
    rb.poll(1000)
    (batch,) = batches
    sizes = [len(r) for r in batch]
    assert sizes == [RECORD] * 5 + [16 + 4 * RECORD]
    assert batch.uniform_size is None
    ev = [CT.from_buffer("struct call_event *", bytearray(r)) for r in batch[:5]]
    assert [(e.tid, e.ktime_ns) for e in ev] == [(0, 0), (1, 1), (2, 2), (3, 3), (100, 4)]
    assert int.from_bytes(bytes(batch[5])[:4], "little") == PACKED_MAGIC
