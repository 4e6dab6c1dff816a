"""Who a traced process is: identity that survives pid reuse and binaries replaced on disk.

A process is (pid, start time); the file it runs is (device, inode) of /proc/PID/exe —
which names the file the process really maps even after a new binary was renamed over its
path, or the old one deleted. Everything is read through /proc/PID/..., so processes in
other mount namespaces (containers) work with the host's pids.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class TargetError(Exception):
    """A process cannot be traced; the message says which and why. `reason` is a short
    label (no_process, not_go, unsupported, no_probes, permission, attach) for counting."""

    def __init__(self, message: str, reason: str = "attach") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FileId:
    """The executable file a process runs: (device, inode), plus size and mtime so a file
    rewritten in place is not mistaken for the old one."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ProcessId:
    """One process over its whole life: the pid and its start time (clock ticks since
    boot, /proc/PID/stat field 22); a reused pid has another start time."""

    pid: int
    start_time: int


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat; TargetError(no_process) if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise TargetError(f"pid {pid}: no such process ({exc.strerror})", "no_process") from exc
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    return int(stat[stat.rindex(")") + 2:].split()[19])


def process_id(pid: int) -> ProcessId:
    if pid <= 0:
        raise TargetError(f"pid {pid}: not a process id", "no_process")
    return ProcessId(pid, start_time(pid))


def exe_path(pid: int) -> str:
    """The executable's path as the process sees it (may end in ' (deleted)')."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError as exc:
        raise TargetError(f"pid {pid}: no such process", "no_process") from exc
    except OSError as exc:
        raise TargetError(f"pid {pid}: cannot read /proc/{pid}/exe: {exc.strerror} (needs "
                          "root or CAP_SYS_PTRACE)", "permission") from exc


def file_id(pid: int) -> FileId:
    """(dev, inode, size, mtime) of the file the process runs (not of its path now)."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except FileNotFoundError as exc:
        raise TargetError(f"pid {pid}: no such process", "no_process") from exc
    except OSError as exc:
        raise TargetError(f"pid {pid}: cannot stat /proc/{pid}/exe: {exc.strerror}",
                          "permission") from exc
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def runtime_address_fn(pid: int, fid: FileId) -> Callable[[int], int]:
    """file offset of the executable -> address in the process, from /proc/PID/maps.

    Mappings are matched by inode, not by path, so a binary replaced or deleted on disk
    still maps right. Works for PIE and non-PIE alike (no load-bias arithmetic).
    """
    maps: list[tuple[int, int, int]] = []
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError as exc:
        raise TargetError(f"pid {pid}: cannot read /proc/{pid}/maps: {exc.strerror}",
                          "no_process") from exc
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5 or parts[4] != str(fid.ino):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        maps.append((lo, hi - lo, int(parts[2], 16)))

    def addr(file_offset: int) -> int:
        for lo, size, off in maps:
            if off <= file_offset < off + size:
                return lo + file_offset - off
        raise TargetError(f"pid {pid}: file offset {file_offset:#x} of its executable is "
                          "not mapped", "attach")

    return addr


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (b"OTEL_SERVICE_NAME", b"OTEL_RESOURCE_ATTRIBUTES"):
            env[key.decode()] = value.decode("utf-8", "replace")
    return env


def service_name_of(pid: int, exe: str) -> str:
    """OTEL_SERVICE_NAME of the process, else service.name in its OTEL_RESOURCE_ATTRIBUTES,
    else the executable's base name (what users of OpenTelemetry expect to win)."""
    env = _environ(pid)
    name = env.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    for attr in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = attr.partition("=")
        if sep and key.strip() == "service.name" and value.strip():
            from urllib.parse import unquote

            return unquote(value.strip())
    return Path(exe.removesuffix(" (deleted)")).name
