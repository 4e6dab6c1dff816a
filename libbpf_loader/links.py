"""Link: one attachment of a program; detaches when closed."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from libbpf_loader._libbpf import lib
from libbpf_loader._owner import LinkOwner


class Link:
    """An attached program. Close it (or its BpfObject) to detach; close is idempotent.

    Wraps either a libbpf `struct bpf_link *` or, for links libbpf 1.1 cannot make
    (uprobe_multi), a bare link fd.
    """

    def __init__(self, ptr: Any, obj: LinkOwner, description: str, fd: int = -1) -> None:
        self._ptr = ptr
        self._fd = fd
        self._obj = obj
        self.description = description

    @property
    def closed(self) -> bool:
        return self._ptr is None and self._fd < 0

    def close(self) -> None:
        """Detach now; later calls do nothing."""
        ptr, self._ptr = self._ptr, None
        fd, self._fd = self._fd, -1
        if ptr is None and fd < 0:
            return
        self._obj._forget_link(self)
        if ptr is not None:
            lib.bpf_link__destroy(ptr)
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "attached"
        return f"<Link {self.description} {state}>"
