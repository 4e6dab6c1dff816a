"""Ring-buffer batches made in Python, as libbpf_loader hands them over (records at 8-byte
aligned offsets), for tests of the decoding and aggregation paths without a kernel."""

from __future__ import annotations

from libbpf_loader import Batch


def _u32s(values: list[int]) -> memoryview:
    return memoryview(b"".join(v.to_bytes(4, "little") for v in values)).cast("I")


def make_batch(records: list[bytes]) -> Batch:
    """One Batch holding `records` in order."""
    buf, offsets = b"", []
    for r in records:
        offsets.append(len(buf))
        buf += r + b"\0" * (-len(r) % 8)
    sizes = [len(r) for r in records]
    uniform = sizes[0] if len(set(sizes)) == 1 else None
    return Batch(buf, _u32s(offsets), _u32s(sizes), uniform)
