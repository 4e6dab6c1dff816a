"""Exceptions of libbpf_loader: OSError subclasses carrying errno and what was involved.

Callers test the class (e.g. `except ClosedError`) or `.errno`; messages name the object,
program, map, binary, offset or pid so a log line alone says what failed.
"""

from __future__ import annotations

import errno as errno_mod
import os

VERIFIER_SUMMARY_LINES = 12


class BpfError(OSError):
    """Base of every libbpf_loader error; `.errno` is the positive errno."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)


class LibbpfVersionError(ImportError):
    """The system libbpf is too old, or the compiled extension is stale."""


class ObjectOpenError(BpfError):
    """The BPF object file could not be opened or parsed."""


class LoadError(BpfError):
    """The kernel (verifier) or libbpf refused to load the object.

    `verifier_log` holds the kernel's whole log; `str()` shows only its tail, like
    cilium/ebpf's VerifierError, because the full log can be megabytes.
    """

    def __init__(self, err: int, message: str, verifier_log: str = "",
                 libbpf_log: tuple[str, ...] = ()) -> None:
        self.verifier_log = verifier_log
        self.libbpf_log = libbpf_log
        summary = message
        if verifier_log:
            tail = verifier_log.rstrip("\n").splitlines()[-VERIFIER_SUMMARY_LINES:]
            summary += "\nverifier log (tail; full log in .verifier_log):\n" + "\n".join(tail)
        super().__init__(err, summary)


class AttachError(BpfError):
    """A program could not be attached (bad binary, offset, pid, or kernel refusal)."""


class MapError(BpfError):
    """A map operation failed or got a key/value of the wrong size."""


class ClosedError(BpfError):
    """The object, link or ring buffer was used after close()."""

    def __init__(self, what: str) -> None:
        super().__init__(errno_mod.EBADF, f"{what} is closed")


LIBBPF_ERRNO_BASE = 4000  # libbpf's own codes (bad ELF, relocation, ...) start here


def strerror(err: int) -> str:
    """Text for an errno, including libbpf's own codes (e.g. 4001: invalid ELF format)."""
    from libbpf_loader._libbpf import ffi, lib

    buf = ffi.new("char[]", 256)
    if lib.libbpf_strerror(abs(err), buf, 256) == 0:
        return ffi.string(buf).decode()
    return os.strerror(abs(err))


def normalize_errno(err: int) -> int:
    """Positive errno from a positive/negative one; libbpf-only codes become EINVAL."""
    err = abs(err) or errno_mod.EIO
    return errno_mod.EINVAL if err >= LIBBPF_ERRNO_BASE else err


def error_from_errno(cls: type[BpfError], err: int, what: str, detail: str = "") -> BpfError:
    """Build `cls` from a positive or negative errno: the single place they are converted."""
    return cls(normalize_errno(err), f"{what}: {strerror(err or errno_mod.EIO)}{detail}")
