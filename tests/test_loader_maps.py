"""Map access after load and configuration before load (.rodata, sizes)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from pathlib import Path

import cffi
import pytest

from libbpf_loader import BpfObject, MapError

HASH_MAP = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";

struct tkey { __u32 pid; __u32 pad; __u64 conn; };

/* 64 entries: room for the few keys a test writes */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct tkey);
	__type(value, __u64);
} table SEC(".maps");

const volatile __u64 knob = 7;

SEC("uprobe")
int touch(struct pt_regs *ctx)
{
	struct tkey k = { .pid = 1, .conn = knob };
	__u64 one = 1;
	bpf_map_update_elem(&table, &k, &one, BPF_ANY);
	return 0;
}
"""

KEY = cffi.FFI()
KEY.cdef("struct tkey { uint32_t pid; uint32_t pad; uint64_t conn; };")


def test_hash_map_roundtrip(compile_bpf: Callable[..., Path]) -> None:
    with BpfObject.open(compile_bpf(HASH_MAP, "hashmap")) as obj:
        obj.load()
        table = obj.map("table")
        assert (table.key_size, table.value_size, table.max_entries) == (16, 8, 64)
        key = KEY.new("struct tkey *", {"pid": 5, "conn": 0xDEAD})
        assert table.lookup(key[0]) is None
        table.update(key[0], (42).to_bytes(8, "little"))
        raw_key = bytes(KEY.buffer(key))
        assert table.lookup(raw_key) == (42).to_bytes(8, "little")
        table.update(struct.pack("<IIQ", 6, 0, 1), 43)
        assert sorted(table.keys()) == sorted([raw_key, struct.pack("<IIQ", 6, 0, 1)])
        assert dict(table.items())[raw_key] == (42).to_bytes(8, "little")
        table.delete(raw_key)
        assert table.lookup(raw_key) is None
        with pytest.raises(MapError) as info:
            table.delete(raw_key)
        assert info.value.errno == errno.ENOENT and "table" in str(info.value)
        with pytest.raises(MapError, match=r"key for map 'table'.* must be 16 bytes, got 4"):
            table.lookup(b"\0" * 4)


def test_rodata_and_sizes_are_set_before_load(compile_bpf: Callable[..., Path]) -> None:
    with BpfObject.open(compile_bpf(HASH_MAP, "hashmap")) as obj:
        rodata = obj.map(".rodata")
        assert struct.unpack("<Q", rodata.initial_value) == (7,)
        rodata.set_initial_value(struct.pack("<Q", 9))
        assert struct.unpack("<Q", rodata.initial_value) == (9,)
        with pytest.raises(MapError, match="must be 8 bytes"):
            rodata.set_initial_value(b"\0")
        obj.map("table").resize(128)
        with pytest.raises(MapError, match="not loaded"):
            obj.map("table").lookup(b"\0" * 16)
        obj.load()
        assert obj.map("table").max_entries == 128
        assert struct.unpack("<Q", obj.map(".rodata").lookup(0)) == (9,)


PERCPU_MAP = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";

/* one counter slot: each CPU keeps its own copy */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} hits SEC(".maps");

SEC("socket")
int count(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&hits, &zero);
	if (slot)
		*slot += 1;
	return 0;
}
"""


def test_percpu_map_gives_one_value_per_cpu(compile_bpf: Callable[..., Path]) -> None:
    with BpfObject.open(compile_bpf(PERCPU_MAP, "percpu")) as obj:
        obj.load()
        hits = obj.map("hits")
        obj.program("count").test_run(bytes(64), repeat=25)
        per_cpu = hits.lookup_percpu(0)
        assert per_cpu is not None and len(per_cpu) >= 1
        # 4-byte values, padded to 8 per CPU by the kernel: each slice is one CPU's count.
        assert all(len(v) == 4 for v in per_cpu)
        assert sum(int.from_bytes(v, "little") for v in per_cpu) == 25
        hits.update_percpu(0, [i for i in range(len(per_cpu))])
        assert [int.from_bytes(v, "little") for v in hits.lookup_percpu(0)] == \
            list(range(len(per_cpu)))
        # A one-value read would overflow its buffer: refused, not corrupted.
        with pytest.raises(MapError, match="lookup_percpu"):
            hits.lookup(0)
        with pytest.raises(MapError, match="needs"):
            hits.update_percpu(0, [1] * (len(per_cpu) + 1))


def test_shared_map_is_one_kernel_map_for_two_objects(compile_bpf: Callable[..., Path]) -> None:
    """What one object's program writes, the other object reads, and the reverse."""
    path = compile_bpf(HASH_MAP, "hashmap")
    with BpfObject.open(path) as owner, BpfObject.open(path) as user:
        owner.map(".rodata").set_initial_value(struct.pack("<Q", 42))
        owner.load()
        user.map("table").share(owner.map("table"))
        user.load()
        key = KEY.new("struct tkey *", {"pid": 1, "conn": 42})
        owner.map("table").update(key[0], 5)
        assert int.from_bytes(user.map("table").lookup(key[0]), "little") == 5
        user.map("table").delete(key[0])
        assert owner.map("table").lookup(key[0]) is None
        assert user.map("table").fd != owner.map("table").fd  # own fd, same map


def test_sharing_a_map_of_another_shape_is_refused(compile_bpf: Callable[..., Path]) -> None:
    """libbpf itself would adopt the other map's size without a word."""
    path = compile_bpf(HASH_MAP, "hashmap")
    with BpfObject.open(path) as owner, BpfObject.open(path) as user:
        owner.map("table").resize(128)
        owner.load()
        with pytest.raises(MapError) as exc:
            user.map("table").share(owner.map("table"))
        assert exc.value.errno == errno.EINVAL and "max_entries" in str(exc.value)
        assert user.map("table").max_entries == 64


def test_sharing_needs_a_loaded_map(compile_bpf: Callable[..., Path]) -> None:
    path = compile_bpf(HASH_MAP, "hashmap")
    with BpfObject.open(path) as a, BpfObject.open(path) as b:
        with pytest.raises(MapError) as exc:
            b.map("table").share(a.map("table"))
        assert exc.value.errno == errno.EBADF
