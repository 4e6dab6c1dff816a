"""Map: configure before load (sizes, initial .rodata/.data) and read/write after load."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from libbpf_loader._libbpf import ffi, lib
from libbpf_loader._owner import MapOwner
from libbpf_loader.errors import MapError, error_from_errno

BytesLike = bytes | bytearray | memoryview

# enum bpf_map_type: PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
PERCPU_MAP_TYPES = frozenset({5, 6, 10, 21})


def as_bytes(value: Any) -> bytes:
    """Bytes of a bytes-like value or of a cffi struct/array (from any FFI instance)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        if ffi.typeof(value).kind in ("struct", "union"):
            value = ffi.addressof(value)
        return bytes(ffi.buffer(value))
    except TypeError as exc:
        raise TypeError(f"expected bytes or a cffi struct, got {type(value).__name__}") from exc


class Map:
    """One map of a BpfObject; valid while the object is open.

    Values are `value_size` bytes. Per-CPU maps hold one value per possible CPU: read and
    write them with lookup_percpu/update_percpu (lookup/update refuse them, because the
    kernel would write every CPU's value into a one-value buffer).
    """

    def __init__(self, ptr: Any, obj: MapOwner) -> None:
        self._ptr = ptr
        self._obj = obj
        self.name = ffi.string(lib.bpf_map__name(ptr)).decode()

    def _live(self) -> Any:
        self._obj._check_open()
        return self._ptr

    def _what(self) -> str:
        return f"map {self.name!r} of {self._obj.path}"

    @property
    def fd(self) -> int:
        """File descriptor (-1 before load)."""
        return lib.bpf_map__fd(self._live())

    @property
    def type(self) -> int:
        return int(lib.bpf_map__type(self._live()))

    @property
    def key_size(self) -> int:
        return lib.bpf_map__key_size(self._live())

    @property
    def value_size(self) -> int:
        return lib.bpf_map__value_size(self._live())

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_MAP_TYPES

    @property
    def max_entries(self) -> int:
        return lib.bpf_map__max_entries(self._live())

    # -- before load ------------------------------------------------------------------
    def resize(self, max_entries: int) -> None:
        """Set max_entries (before load): e.g. a bigger ring buffer for bursty producers."""
        ret = lib.bpf_map__set_max_entries(self._live(), max_entries)
        if ret < 0:
            raise error_from_errno(MapError, ret,
                                   f"set max_entries={max_entries} on {self._what()}")

    set_max_entries = resize

    @property
    def initial_value(self) -> bytes:
        """Initial contents of a .rodata/.data/.bss map (e.g. `const volatile` config)."""
        size = ffi.new("size_t *")
        ptr = lib.bpf_map__initial_value(self._live(), size)
        if ptr == ffi.NULL:
            raise MapError(errno.EINVAL, f"{self._what()} has no initial value")
        return bytes(ffi.buffer(ptr, size[0]))

    def set_initial_value(self, data: Any) -> None:
        """Replace the initial contents (before load); the size must match exactly."""
        raw = as_bytes(data)
        if len(raw) != self.value_size:
            raise MapError(errno.EINVAL, f"initial value of {self._what()} must be "
                                         f"{self.value_size} bytes, got {len(raw)}")
        ret = lib.bpf_map__set_initial_value(self._live(), raw, len(raw))
        if ret < 0:
            raise error_from_errno(MapError, ret, f"set initial value of {self._what()}")

    def share(self, other: Map) -> None:
        """Make this map, before load, the very kernel map `other` (loaded) already is.

        Two objects that must see each other's entries (one writes, the other reads) share
        a map this way instead of copying state through user space. libbpf would silently
        adopt the other map's shape, so a type, key/value size or max_entries that differs
        from this map's declaration is refused here: the programs were built for this one.
        """
        fd = other._loaded_fd()
        mine = (self.type, self.key_size, self.value_size, self.max_entries)
        theirs = (other.type, other.key_size, other.value_size, other.max_entries)
        if mine != theirs:
            raise MapError(errno.EINVAL, f"cannot share {other._what()} as {self._what()}: "
                                         f"(type, key, value, max_entries) {theirs} != {mine}")
        ret = lib.bpf_map__reuse_fd(self._live(), fd)
        if ret < 0:
            raise error_from_errno(MapError, ret, f"share {other._what()} as {self._what()}")

    # -- after load -------------------------------------------------------------------
    def _loaded_fd(self) -> int:
        fd = self.fd
        if fd < 0:
            raise MapError(errno.EBADF, f"{self._what()} is not loaded")
        return fd

    def _sized(self, value: Any, size: int, role: str) -> bytes:
        if isinstance(value, int):
            return value.to_bytes(size, "little")
        raw = as_bytes(value)
        if len(raw) != size:
            raise MapError(errno.EINVAL,
                           f"{role} for {self._what()} must be {size} bytes, got {len(raw)}")
        return raw

    def _one_value_map(self, op: str) -> int:
        fd = self._loaded_fd()
        if self.percpu:
            raise MapError(errno.EINVAL, f"{op} on per-CPU {self._what()}: "
                                         f"use {op}_percpu (one value per CPU)")
        return fd

    def _lookup_into(self, fd: int, key: Any, size: int) -> bytes | None:
        k = self._sized(key, self.key_size, "key")
        out = ffi.new("char[]", size)
        if lib.bpf_map_lookup_elem(fd, k, out) < 0:
            err = ffi.errno
            if err == errno.ENOENT:
                return None
            raise error_from_errno(MapError, err, f"lookup in {self._what()}")
        return bytes(ffi.buffer(out))

    def lookup(self, key: Any) -> bytes | None:
        """Value bytes for `key` (bytes, cffi struct, or int), or None when absent."""
        return self._lookup_into(self._one_value_map("lookup"), key, self.value_size)

    def _percpu_stride(self) -> tuple[int, int]:
        """(possible CPUs, bytes per CPU): the kernel pads each CPU's value to 8 bytes."""
        ncpus = lib.libbpf_num_possible_cpus()
        if ncpus < 0:
            raise error_from_errno(MapError, ncpus, "count possible CPUs")
        return ncpus, (self.value_size + 7) & ~7

    def lookup_percpu(self, key: Any) -> list[bytes] | None:
        """Each possible CPU's value for `key` of a per-CPU map, or None when absent."""
        fd = self._loaded_fd()
        if not self.percpu:
            raise MapError(errno.EINVAL, f"lookup_percpu on {self._what()}: not per-CPU")
        ncpus, stride = self._percpu_stride()
        raw = self._lookup_into(fd, key, ncpus * stride)
        if raw is None:
            return None
        return [raw[i * stride:i * stride + self.value_size] for i in range(ncpus)]

    def update_percpu(self, key: Any, values: list[Any], flags: int = 0) -> None:
        """Set every possible CPU's value for `key` of a per-CPU map (one value per CPU)."""
        fd = self._loaded_fd()
        if not self.percpu:
            raise MapError(errno.EINVAL, f"update_percpu on {self._what()}: not per-CPU")
        ncpus, stride = self._percpu_stride()
        if len(values) != ncpus:
            raise MapError(errno.EINVAL, f"update_percpu on {self._what()} needs {ncpus} "
                                         f"values (possible CPUs), got {len(values)}")
        pad = bytes(stride - self.value_size)
        blob = b"".join(self._sized(v, self.value_size, "value") + pad for v in values)
        k = self._sized(key, self.key_size, "key")
        if lib.bpf_map_update_elem(fd, k, blob, flags) < 0:
            raise error_from_errno(MapError, ffi.errno, f"update in {self._what()}")

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        """Insert or replace (flags: BPF_ANY=0, BPF_NOEXIST=1, BPF_EXIST=2)."""
        fd = self._one_value_map("update")
        k = self._sized(key, self.key_size, "key")
        v = self._sized(value, self.value_size, "value")
        if lib.bpf_map_update_elem(fd, k, v, flags) < 0:
            raise error_from_errno(MapError, ffi.errno, f"update in {self._what()}")

    def delete(self, key: Any) -> None:
        """Remove `key`; raises MapError (ENOENT) when absent."""
        fd = self._loaded_fd()
        k = self._sized(key, self.key_size, "key")
        if lib.bpf_map_delete_elem(fd, k) < 0:
            raise error_from_errno(MapError, ffi.errno, f"delete from {self._what()}")

    def keys(self) -> Iterator[bytes]:
        """Iterate keys as bytes (a snapshot walk: concurrent changes may skip or repeat)."""
        fd = self._loaded_fd()
        size = self.key_size
        cur = ffi.NULL
        nxt = ffi.new("char[]", size)
        while True:
            if lib.bpf_map_get_next_key(fd, cur, nxt) < 0:
                err = ffi.errno
                if err == errno.ENOENT:
                    return
                raise error_from_errno(MapError, err, f"iterate {self._what()}")
            key = bytes(ffi.buffer(nxt))
            yield key
            cur = ffi.new("char[]", key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Iterate (key, value) pairs; keys deleted meanwhile are skipped."""
        self._one_value_map("items")
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __repr__(self) -> str:
        return f"<Map {self.name!r}>"
