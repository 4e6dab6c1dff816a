"""Probe sets: each turns an attach plan into a BPF config struct plus attach points."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttachPoint:
    """One uprobe: which program of the object goes at which file offset of the binary."""

    program: str
    symbol: str
    file_offset: int


__all__ = ["AttachPoint"]
