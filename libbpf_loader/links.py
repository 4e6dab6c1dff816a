"""Link: one attachment of a program; detaches when closed."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from libbpf_loader._libbpf import lib

if TYPE_CHECKING:
    from libbpf_loader.object import BpfObject


class Link:
    """An attached program. Close it (or its BpfObject) to detach; close is idempotent."""

    def __init__(self, ptr: Any, obj: BpfObject, description: str) -> None:
        self._ptr = ptr
        self._obj = obj
        self.description = description

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Detach now; later calls do nothing."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._obj._forget_link(self)
            lib.bpf_link__destroy(ptr)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "attached"
        return f"<Link {self.description} {state}>"
