"""Span sinks: JSON lines to a file or stdout (one object per line, flushed per batch)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .spans import Span


class JsonLinesSink:
    """Write spans as JSON lines; '-' means stdout. close() is idempotent."""

    def __init__(self, target: str | Path | TextIO) -> None:
        self._own = False
        if isinstance(target, str | Path):
            if str(target) == "-":
                self._f: TextIO = sys.stdout
            else:
                self._f = open(target, "a", encoding="utf-8")  # noqa: SIM115 - owned
                self._own = True
        else:
            self._f = target
        self._lock = threading.Lock()
        self._closed = False

    def write(self, spans: Iterable[Span]) -> None:
        lines = "".join(json.dumps(s.to_json(), separators=(",", ":")) + "\n" for s in spans)
        if not lines:
            return
        with self._lock:
            if self._closed:
                return
            self._f.write(lines)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._own:
                self._f.close()
