"""Where a traced process's config goes in a probe object: its slot, or the hash map.

Every probe hit looks its process's config up first; in the object's hash map that costs
~50 ns of a ~500 ns hit on this VM, in an ARRAY slot a few instructions. So each config map
`name` has a slot table `name_slots` beside it (bpf_src/common.h, CONFIG_MAPS): the slot
picked by the hash of the key holds (key, config); a process whose slot another live one
holds goes in the hash map, as before. This module keeps the agent's side of that contract:

- a slot is written in two steps, the config under key 0, then the same bytes with the key,
  so a probe that reads the key reads the whole config (an ARRAY update is a plain copy);
- a slot is freed by writing key 0 over the same bytes;
- a freed slot is reused only after GRACE_S: a probe of the process that left, still
  running when its key went, must not read the next process's config under its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

GRACE_S = 1.0   # a probe runs for microseconds: a second is far past any still running
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class ConfigMap(Protocol):
    """What this module needs of a map (libbpf_loader.BpfMap)."""

    @property
    def value_size(self) -> int: ...

    @property
    def max_entries(self) -> int: ...

    def lookup(self, key: bytes | int) -> bytes | None: ...

    def update(self, key: bytes | int, value: bytes) -> None: ...

    def delete(self, key: bytes | int) -> None: ...


def slot_of(key: int, bits: int) -> int:
    """bpf_src/common.h slot_of: Fibonacci hashing of the 64-bit key, `bits` wide."""
    return ((key * _GOLDEN) & _MASK64) >> (64 - bits)


def slot_value(key: int, config: bytes, size: int) -> bytes:
    """A slot's bytes: the key (u64), then the config, zero-padded to the map's value size."""
    raw = key.to_bytes(8, "little") + config
    if len(raw) > size:
        raise ValueError(f"config of {len(config)} bytes does not fit a {size}-byte slot")
    return raw.ljust(size, b"\0")


@dataclass
class _Slot:
    key: int = 0             # 0: free
    freed_at: float = -1e9   # when its last holder left (monotonic seconds)


@dataclass
class ConfigTable:
    """The configs of one object's config map (`hash`) and its slot table (`slots`; None
    for an object without one, a path of the agent's seam built without CONFIG_MAPS: then
    every config goes in the hash map)."""

    hash: ConfigMap
    slots: ConfigMap | None
    clock: Callable[[], float] = time.monotonic
    _slots: dict[int, _Slot] = field(default_factory=dict)
    _in_slot: dict[bytes, bytes] = field(default_factory=dict)  # key -> its config
    _in_hash: set[bytes] = field(default_factory=set)

    def write(self, key: bytes, config: bytes) -> None:
        """Give the process under `key` (the hash map's key bytes) this config: in its slot
        when that is free (or its own already), else in the hash map. A process keeps its
        tier until deleted, so no stale copy is left in the other."""
        k = _key_int(key)
        idx = self._slot_of(k)
        slot = self._slots.setdefault(idx, _Slot())
        free = slot.key == 0 and self.clock() - slot.freed_at >= GRACE_S
        if self.slots is not None and (key in self._in_slot or
                                       (free and key not in self._in_hash)):
            size = self.slots.value_size
            self.slots.update(idx, slot_value(0, config, size))
            self.slots.update(idx, slot_value(k, config, size))
            slot.key = k
            self._in_slot[key] = config
            return
        self.hash.update(key, config)
        self._in_hash.add(key)

    def delete(self, key: bytes) -> None:
        """Forget the process under `key`: no probe finds its config any more."""
        config = self._in_slot.pop(key, None)
        if config is None or self.slots is None:
            self._in_hash.discard(key)
            self.hash.delete(key)
            return
        idx = self._slot_of(_key_int(key))
        self.slots.update(idx, slot_value(0, config, self.slots.value_size))
        self._slots[idx] = _Slot(0, self.clock())

    def read(self, key: bytes) -> bytes | None:
        """The config the probes see under `key` now (with what they learned into it)."""
        if key not in self._in_slot or self.slots is None:
            return self.hash.lookup(key)
        raw = self.slots.lookup(self._slot_of(_key_int(key)))
        if raw is None or int.from_bytes(raw[:8], "little") != _key_int(key):
            return None
        return raw[8:8 + len(self._in_slot[key])]

    def _slot_of(self, key: int) -> int:
        assert self.slots is not None
        return slot_of(key, self.slots.max_entries.bit_length() - 1)  # 1 << CONFIG_SLOT_BITS

    def in_slot(self, key: bytes) -> bool:
        """Whether `key`'s config is in the slot table (else the hash map, or nowhere)."""
        return key in self._in_slot


def _key_int(key: bytes) -> int:
    k = int.from_bytes(key, "little")
    if k == 0:
        raise ValueError("a config key of 0 is the free slot's mark")
    return k
