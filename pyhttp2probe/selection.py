"""Which processes the node service traces: --pid, --exe, --port, --all, --exclude-exe.

Everything is read through /proc/PID/... so processes in other containers (mount and
network namespaces) are judged by what they really run and listen on; pids are the host's.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


@dataclass(frozen=True)
class Selection:
    """The selection flags; a process is chosen when any rule picks it and no exclusion
    names it. `everything` is --all (every Go process with gRPC or HTTP/2 code)."""

    pids: frozenset[int] = frozenset()
    exe: tuple[str, ...] = ()
    ports: frozenset[int] = frozenset()
    everything: bool = False
    exclude_exe: tuple[str, ...] = ()

    @property
    def wants_ports(self) -> bool:
        return bool(self.ports)

    def excluded(self, exe: str) -> bool:
        return any(_exe_matches(p, exe) for p in self.exclude_exe)

    def choose(self, pid: int, exe: str) -> str | None:
        """Why `pid` (running `exe`) is chosen ("pid", "exe", "port", "all"), or None."""
        if self.excluded(exe):
            return None
        if pid in self.pids:
            return "pid"
        if any(_exe_matches(p, exe) for p in self.exe):
            return "exe"
        if self.ports and listening_ports(pid) & self.ports:
            return "port"
        if self.everything:
            return "all"
        return None


def _exe_matches(pattern: str, exe: str) -> bool:
    """A glob on the full path; on the base name when the pattern has no '/'."""
    exe = exe.removesuffix(" (deleted)")
    if "/" in pattern:
        return fnmatch.fnmatchcase(exe, pattern)
    return fnmatch.fnmatchcase(os.path.basename(exe), pattern)


def _listening_inodes(pid: int) -> dict[int, int]:
    """socket inode -> port of every TCP listener in the process's network namespace."""
    out: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == _LISTEN:
                out[int(cols[9])] = int(cols[1].rsplit(":", 1)[1], 16)
    return out


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` itself listens on (its own socket fds, not its netns')."""
    listeners = _listening_inodes(pid)
    if not listeners:
        return set()
    ports = set()
    try:
        fds = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    with fds:
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                port = listeners.get(int(target[8:-1]))
                if port is not None:
                    ports.add(port)
    return ports


@dataclass
class PortWatch:
    """Processes that may open a wanted listener soon after exec: looked at again at
    growing delays (a Go server listens a few ms to seconds after it starts)."""

    delays: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    due: dict[int, tuple[float, int]] = field(default_factory=dict)  # pid -> (when, step)

    def watch(self, pid: int, now: float) -> None:
        self.due.setdefault(pid, (now + self.delays[0], 0))

    def forget(self, pid: int) -> None:
        self.due.pop(pid, None)

    def ready(self, now: float) -> list[int]:
        """Pids to look at now; each is rescheduled at its next delay, or dropped."""
        out = []
        for pid, (when, step) in list(self.due.items()):
            if when > now:
                continue
            out.append(pid)
            if step + 1 < len(self.delays):
                self.due[pid] = (now + self.delays[step + 1], step + 1)
            else:
                del self.due[pid]
        return out


def selection_from(pids: Iterable[int] = (), exe: Iterable[str] = (),
                   ports: Iterable[int] = (), everything: bool = False,
                   exclude_exe: Iterable[str] = ()) -> Selection:
    return Selection(frozenset(pids), tuple(exe), frozenset(ports), everything,
                     tuple(exclude_exe))
