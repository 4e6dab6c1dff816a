"""The uprobe links of each executable file the agent traces.

Rule: a process that is not traced never takes a trap. So links are per process (the
kernel then plants breakpoints in that process only), except where every process running a
file is traced: then one pid-less link per program serves them all, and the next process of
that file costs a config write, not a link per program. When an untraced process shows up
running a shared file (the probes count it as no_config), the file goes back to per-process
links.

Two link kinds: uprobe_multi (one link per program and binary, all its offsets; kernel
>= 6.6; needs only CAP_BPF + CAP_PERFMON) and perf-event uprobes (one link per offset; on
this kernel they need CAP_SYS_ADMIN). Detaching waits for an RCU grace period per link
(~25-100 ms here): links are closed concurrently, so N links cost about one wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .probes import AttachPoint
from .targets import FileId

MULTI = "uprobe_multi"
PERF = "perf_event"
_CLOSE_WORKERS = 64  # links closed at once; each close mostly sleeps in the kernel


def default_style() -> str:
    """uprobe_multi where the kernel has it (>= 6.6), else perf-event uprobes."""
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return PERF
    return MULTI if (major, minor) >= (6, 6) else PERF


def pids_running(fid: FileId) -> set[int]:
    """Every process whose executable is this file (by device and inode)."""
    out = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/exe")
        except OSError:  # kernel threads, processes gone, no permission
            continue
        if st.st_ino == fid.ino and st.st_dev == fid.dev:
            out.add(int(entry.name))
    return out


@dataclass
class FileLinks:
    """Links of one executable file: shared (pid-less) or per traced process."""

    fid: FileId
    points: Mapping[str, Sequence[AttachPoint]]  # by probe path; the same for every process
    pids: set[int] = field(default_factory=set)
    shared: list[Any] | None = None
    per_pid: dict[int, list[Any]] = field(default_factory=dict)

    def all_links(self) -> list[Any]:
        return [*(self.shared or ()), *(ln for links in self.per_pid.values() for ln in links)]


class UprobeLinker:
    """Makes and closes links for the agent's loaded objects (by probe path name)."""

    def __init__(self, objects: Mapping[str, Any], style: str) -> None:
        self.objects = objects
        self.style = style
        self._pool: ThreadPoolExecutor | None = None

    def link(self, binary: str | Path, points: Mapping[str, Sequence[AttachPoint]],
             pid: int) -> list[Any]:
        """Attach every point (pid -1: every process of the file); all or nothing."""
        links: list[Any] = []
        try:
            for path_name, pts in points.items():
                obj = self.objects[path_name]
                by_prog: dict[str, list[int]] = {}
                for p in pts:
                    by_prog.setdefault(p.program, []).append(p.file_offset)
                for prog_name, offsets in by_prog.items():
                    prog = obj.program(prog_name)
                    if self.style == MULTI:
                        links.append(prog.attach_uprobe_multi(binary, offsets, pid=pid))
                    else:
                        links += [prog.attach_uprobe(binary, off, pid=pid) for off in offsets]
        except BaseException:
            self.close(links)
            raise
        return links

    def close(self, links: Iterable[Any]) -> None:
        """Detach links concurrently: each waits for a grace period, together about one."""
        links = [ln for ln in links if not ln.closed]
        if len(links) <= 1:
            for ln in links:
                ln.close()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_CLOSE_WORKERS, thread_name_prefix="unlink")
        list(self._pool.map(lambda ln: ln.close(), links))

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
