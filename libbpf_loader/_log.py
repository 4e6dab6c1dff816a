"""libbpf's own log, routed to structlog through the C print shim (filtered in C by level).

libbpf has one global print hook, so this module holds the one piece of global state:
the stack of active captures, used to attach libbpf's message to the exception it explains.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from libbpf_loader._libbpf import ffi, lib

_logger = structlog.get_logger("libbpf")
_local = threading.local()
LEVELS = {"warn": lib.LIBBPF_WARN, "info": lib.LIBBPF_INFO, "debug": lib.LIBBPF_DEBUG}


@ffi.def_extern()
def _lbl_log(level: int, msg: object) -> None:
    """Receive one formatted libbpf message (called from C)."""
    text = ffi.string(msg).decode("utf-8", "replace").rstrip("\n")
    for lines in getattr(_local, "captures", ()):
        lines.append(text)
    if level == lib.LIBBPF_WARN:
        _logger.warning(text)
    elif level == lib.LIBBPF_INFO:
        _logger.info(text)
    else:
        _logger.debug(text)


def set_libbpf_log_level(level: str) -> None:
    """Forward libbpf messages up to `level` ("warn", "info" or "debug"); filtered in C."""
    lib.lbl_set_print_level(LEVELS[level])


@contextmanager
def capture_libbpf_log() -> Iterator[list[str]]:
    """Collect the libbpf messages this thread emits inside the block."""
    lines: list[str] = []
    stack = getattr(_local, "captures", None)
    if stack is None:
        stack = _local.captures = []
    stack.append(lines)
    try:
        yield lines
    finally:
        stack.remove(lines)


lib.lbl_install_print()
