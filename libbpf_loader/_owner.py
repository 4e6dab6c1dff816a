"""What a Map or Link needs of the object that owns it.

Declared apart from BpfObject so that maps.py and links.py depend on this small contract,
not on object.py (which builds them): the loader's modules then import one way only.
"""

from __future__ import annotations

from typing import Any, Protocol


class MapOwner(Protocol):
    """The object a Map belongs to: its maps are valid only while it is open."""

    path: str

    def _check_open(self) -> None: ...


class LinkOwner(Protocol):
    """The object a Link was attached from: it tracks its live links."""

    def _forget_link(self, link: Any) -> None: ...
