"""Go string literals of traced processes, read from their executables.

A gRPC client's method is, in generated code, a constant: its bytes sit in the binary's
.rodata, and the client probe sends the string's address and length instead of a copy
(bpf_src/events.h, struct grpc_client_lit_event). This turns such an (address, length) back
into text: from the executable the process runs (an fd opened at attach, so a binary
replaced or deleted on disk still reads right), at the file offset the address maps to.

A process's entry outlives its detach by two drain passes and RETIRE_S: its records
already in the ring buffer are decoded after it is gone, and the ring is empty of them once
a pass that began after the detach has ended (the time covers a probe that read the config
just before the detach deleted it and writes its record a little later).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from .targets import FileId

# Distinct literals remembered per process: a program has a few hundred methods at most;
# past this a literal is read again (one pread) rather than remembered.
MEMO_PER_PROCESS = 4096
# Longest literal read: a method name is short; this only bounds a corrupt record's read.
MAX_LITERAL = 1 << 16
RETIRE_S = 2.0


@dataclass
class _Image:
    """Where one process's .rodata is: [lo, hi) in the process, file_off in the file."""

    fid: FileId
    lo: int
    hi: int
    file_off: int
    retired_at: int = -1  # drain passes ended when it was detached; -1: attached
    retired_time: float = 0.0
    memo: dict[tuple[int, int], str] = field(default_factory=dict)


class Literals:
    """(pid, address, length) -> the literal's text, for the processes an agent traces."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[int, _Image] = {}
        self._fds: dict[FileId, list[int]] = {}  # fid -> [fd, processes using it]
        self._passes = 0

    def add(self, pid: int, fid: FileId, lo: int, hi: int, file_off: int) -> None:
        """Process `pid` runs file `fid`, whose .rodata (at file_off) it maps at [lo, hi)."""
        with self._lock:
            self._drop(pid)  # a reused pid: the old image goes now
            have = self._fds.get(fid)
            if have is None:
                have = self._fds[fid] = [os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC), 0]
            have[1] += 1
            self._images[pid] = _Image(fid, lo, hi, file_off)

    def retire(self, pid: int) -> None:
        """`pid` is detached: forget it once its records have been drained."""
        with self._lock:
            img = self._images.get(pid)
            if img is not None and img.retired_at < 0:
                img.retired_at, img.retired_time = self._passes, time.monotonic()

    def drained(self) -> None:
        """A drain pass ended: images retired two passes (and RETIRE_S) ago have nothing
        left in flight."""
        with self._lock:
            self._passes += 1
            old = time.monotonic() - RETIRE_S
            for pid in [p for p, i in self._images.items()
                        if 0 <= i.retired_at <= self._passes - 2 and i.retired_time <= old]:
                self._drop(pid)

    def close(self) -> None:
        with self._lock:
            for pid in list(self._images):
                self._drop(pid)

    def text(self, pid: int, addr: int, n: int) -> str | None:
        """The literal at `addr` (`n` bytes) in process `pid`, or None when that is not one
        of its .rodata's (unknown process, address outside, unreadable file)."""
        with self._lock:
            img = self._images.get(pid)
            if img is None or not 0 < n <= MAX_LITERAL or not img.lo <= addr <= img.hi - n:
                return None
            hit = img.memo.get((addr, n))
            if hit is not None:
                return hit
            fd = self._fds[img.fid][0]
            try:
                raw = os.pread(fd, n, img.file_off + addr - img.lo)
            except OSError:
                return None
            if len(raw) != n:
                return None
            s = raw.decode("utf-8", "replace")
            if len(img.memo) < MEMO_PER_PROCESS:
                img.memo[(addr, n)] = s
            return s

    def _drop(self, pid: int) -> None:
        img = self._images.pop(pid, None)
        if img is None:
            return
        have = self._fds[img.fid]
        have[1] -= 1
        if have[1] == 0:
            os.close(have[0])
            del self._fds[img.fid]
