"""RingBuffer: records are drained in C into one batch; Python is called once per batch.

Per-record calls into Python cost more than the records' whole decode, so the C sample
callback copies each record into a growable buffer (8-byte aligned offsets) and Python
gets a `Batch` it can decode in one go (e.g. numpy.frombuffer with a structured dtype).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, overload

from libbpf_loader._libbpf import ffi, lib
from libbpf_loader.errors import BpfError, ClosedError, MapError, error_from_errno
from libbpf_loader.maps import Map

DEFAULT_BATCH_LIMIT = 4 << 20  # bytes per batch before the drain stops and Python runs


class Batch(Sequence[memoryview]):
    """Records of one drain. `buffer` is a bytes object owned by Python: keep it freely."""

    __slots__ = ("_view", "buffer", "offsets", "sizes", "uniform_size")

    def __init__(self, buffer: bytes, offsets: memoryview, sizes: memoryview,
                 uniform_size: int | None) -> None:
        self.buffer = buffer
        self.offsets = offsets  # memoryview of uint32
        self.sizes = sizes
        self.uniform_size = uniform_size  # every record's size, or None when they differ
        self._view = memoryview(buffer)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> memoryview: ...
    @overload
    def __getitem__(self, i: slice) -> list[memoryview]: ...

    def __getitem__(self, i: int | slice) -> memoryview | list[memoryview]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        off = self.offsets[i]
        return self._view[off:off + self.sizes[i]]

    def __iter__(self) -> Iterator[memoryview]:
        view = self._view
        for off, size in zip(self.offsets, self.sizes, strict=True):
            yield view[off:off + size]

    @property
    def stride(self) -> int | None:
        """Distance between records when all have one size (records are 8-byte aligned)."""
        if self.uniform_size is None:
            return None
        return (self.uniform_size + 7) & ~7

    def as_array(self, dtype: Any) -> Any:
        """All records as one numpy structured array (no copy); needs uniform sizes."""
        import numpy as np

        dt = np.dtype(dtype)
        stride = self.stride
        if len(self) == 0:
            return np.empty(0, dtype=dt)
        if stride is None or dt.itemsize > stride:
            raise ValueError(f"records are not all {dt.itemsize} bytes (sizes differ or "
                             f"smaller: {self.uniform_size})")
        if dt.itemsize == stride:
            return np.frombuffer(self.buffer, dtype=dt, count=len(self))
        return np.ndarray((len(self),), dtype=dt, buffer=self.buffer, strides=(stride,))


class RingBuffer:
    """Drains one or more BPF ring-buffer maps (of one or several objects), calling
    `callback(batch)` once per batch.

    `poll()`/`consume()` return the number of records delivered; an exception raised by
    the callback propagates from them. Close it, or its BpfObject, to free it.
    """

    def __init__(self, map: Map, callback: Callable[[Batch], object],
                 batch_limit: int = DEFAULT_BATCH_LIMIT) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._more = False  # the last drain stopped at a full batch: records are pending
        fd = self._ringbuf_fd(map)
        self._batch = lib.lbl_batch_new(batch_limit)
        if self._batch == ffi.NULL:
            raise MemoryError("ring buffer batch")
        rb = lib.lbl_ringbuf_new(fd, self._batch)
        if rb == ffi.NULL:
            err = ffi.errno
            lib.lbl_batch_free(self._batch)
            raise error_from_errno(MapError, err, f"ring buffer on map {map.name!r}")
        self._rb: Any = rb
        # Every object whose maps this drains; closing any of them frees the ring buffer
        # first (its maps' memory is mapped by it).
        self._objs = [map._obj]
        map._obj._register_ringbuf(self)

    @staticmethod
    def _ringbuf_fd(map: Map) -> int:
        if map.type != lib.BPF_MAP_TYPE_RINGBUF:
            raise MapError(errno.EINVAL, f"map {map.name!r} is not a ring buffer")
        fd = map.fd
        if fd < 0:
            raise MapError(errno.EBADF, f"map {map.name!r} is not loaded")
        return fd

    def add(self, map: Map) -> None:
        """Drain another ring-buffer map, of this or another object, into the same batches
        (libbpf's ring_buffer__add: one epoll, one poll for every map).

        The ring buffer is then freed when any of its objects closes, before that object's
        maps go away.
        """
        with self._lock:
            rb = self._live()
            if lib.lbl_ringbuf_add(rb, self._ringbuf_fd(map), self._batch) < 0:
                raise error_from_errno(MapError, ffi.errno,
                                       f"add map {map.name!r} to ring buffer")
            if map._obj not in self._objs:
                self._objs.append(map._obj)
                map._obj._register_ringbuf(self)

    def _live(self) -> Any:
        if self._rb is None:
            raise ClosedError("ring buffer")
        return self._rb

    def fileno(self) -> int:
        """Epoll fd that becomes readable when records are pending (selectors/asyncio)."""
        return lib.ring_buffer__epoll_fd(self._live())

    def poll(self, timeout_ms: int = 100, before_drain: Callable[[], object] | None = None,
             ) -> int:
        """Wait up to `timeout_ms` for a wakeup, then drain EVERY ring, deliver; returns
        records delivered.

        libbpf's ring_buffer__poll drains only the rings epoll reported, and nothing when
        it times out: records a producer submitted with BPF_RB_NO_WAKEUP (bpf_src/common.h
        submit_batched) would wait for some later wakeup. So a consume of all rings follows
        every wait: such a record waits at most `timeout_ms`. When a batch filled up
        (more is pending), the next poll does not wait. `before_drain` runs between the wait
        and the drain: producers that hold records back (per-CPU stages) push them out
        there, so they go in this very drain.
        """
        with self._lock:
            rb = self._live()
            ret = lib.ring_buffer__poll(rb, 0 if self._more else timeout_ms)
            if before_drain is not None:
                before_drain()
            if ret >= 0:
                more = lib.ring_buffer__consume(rb)
                ret = more if more < 0 else ret + more
            self._more = ret == lib.LBL_BATCH_FULL
            return self._deliver(ret, "poll")

    def consume(self) -> int:
        """Drain without waiting; returns records delivered."""
        with self._lock:
            ret = lib.ring_buffer__consume(self._live())
            self._more = ret == lib.LBL_BATCH_FULL
            return self._deliver(ret, "consume")

    def _deliver(self, ret: int, op: str) -> int:
        b = self._batch
        n = b.n
        batch = None
        if n:
            batch = Batch(ffi.buffer(b.buf, b.len)[:],
                          memoryview(ffi.buffer(b.offsets, 4 * n)[:]).cast("I"),
                          memoryview(ffi.buffer(b.sizes, 4 * n)[:]).cast("I"),
                          b.first_size if b.uniform else None)
        oom = b.oom
        lib.lbl_batch_reset(b)
        if batch is not None:
            self._callback(batch)
        if oom:
            raise MemoryError("ring buffer batch could not grow; a record was lost")
        if ret < 0 and ret not in (lib.LBL_BATCH_FULL, -errno.EINTR):
            raise error_from_errno(BpfError, ret, f"ring buffer {op}")
        return n

    @property
    def closed(self) -> bool:
        return self._rb is None

    def close(self) -> None:
        """Free the ring buffer; idempotent; waits for a poll in progress to return."""
        with self._lock:
            rb, self._rb = self._rb, None
            if rb is None:
                return
            lib.ring_buffer__free(rb)
            lib.lbl_batch_free(self._batch)
            self._batch = ffi.NULL
        for obj in self._objs:
            obj._forget_ringbuf(self)

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@ffi.def_extern()
def _lbl_sample(ctx: Any, data: Any, size: int) -> int:
    """Per-record C callback of RecordRingBuffer (the benchmark baseline)."""
    rb: RecordRingBuffer = ffi.from_handle(ctx)
    try:
        rb._callback(ffi.buffer(data, size))
    except BaseException as exc:  # re-raised from poll/consume
        rb._error = exc
        return -errno.ECANCELED
    return 0


class RecordRingBuffer:
    """Baseline: one Python call per record, `callback(buffer)` valid during the call only.

    Kept to measure what batching buys (bench/bench_ringbuf.py); prefer RingBuffer.
    """

    def __init__(self, map: Map, callback: Callable[[Any], object]) -> None:
        self._callback = callback
        self._error: BaseException | None = None
        self._obj = map._obj
        self._handle = ffi.new_handle(self)
        rb = lib.lbl_ringbuf_new_per_record(RingBuffer._ringbuf_fd(map), self._handle)
        if rb == ffi.NULL:
            raise error_from_errno(MapError, ffi.errno, f"ring buffer on map {map.name!r}")
        self._rb: Any = rb
        self._obj._register_ringbuf(self)  # type: ignore[arg-type]

    def _check(self, ret: int, op: str) -> int:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        if ret < 0 and ret != -errno.EINTR:
            raise error_from_errno(BpfError, ret, f"ring buffer {op}")
        return max(ret, 0)

    def poll(self, timeout_ms: int = 100) -> int:
        if self._rb is None:
            raise ClosedError("ring buffer")
        return self._check(lib.ring_buffer__poll(self._rb, timeout_ms), "poll")

    def consume(self) -> int:
        if self._rb is None:
            raise ClosedError("ring buffer")
        return self._check(lib.ring_buffer__consume(self._rb), "consume")

    def close(self) -> None:
        rb, self._rb = self._rb, None
        if rb is not None:
            lib.ring_buffer__free(rb)
            self._obj._forget_ringbuf(self)  # type: ignore[arg-type]
