"""Match gRPC client spans to the workload's ground truth one to one (tests and bench).

A span matches a truth row when (server_port, method, code) agree, the span lies inside
the client-measured interval widened by `tol_ns` (the probes fire inside the client's
timed region, so a correct span can only be shorter than the client's own measurement),
and a completed call's span is not shorter than the delay its server waited.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pyhttp2probe.spans import Span

TOL_NS = 300_000  # clock reads on either side of the probes, plus scheduling noise


@dataclass
class MatchResult:
    """Outcome of a one-to-one match; `exact` when nothing is lost, extra or misplaced."""

    truth: int
    spans: int
    matched: int
    lost: list[dict[str, Any]] = field(default_factory=list)
    extra: list[Span] = field(default_factory=list)
    duplicate_keys: int = 0

    @property
    def exact(self) -> bool:
        return (not self.lost and not self.extra and not self.duplicate_keys
                and self.matched == self.truth == self.spans)

    @property
    def misattributed(self) -> int:
        """Truth rows without their own correct span (lost or paired wrongly)."""
        return self.truth - self.matched

    def summary(self) -> str:
        return (f"truth={self.truth} spans={self.spans} matched={self.matched} "
                f"lost={len(self.lost)} extra={len(self.extra)} "
                f"dup_keys={self.duplicate_keys}")


def truth_key(row: dict[str, Any]) -> tuple[int, str, int]:
    return (int(row["server_port"]), row["method"], int(row["code"]))


def span_key(s: Span) -> tuple[int, str, int]:
    return (s.server_port, s.full_method, s.status_code)


def _too_short(s: Span, row: dict[str, Any]) -> bool:
    """A completed call's span must cover the server's delay (the request went out after
    the span started, the answer came back before it ended)."""
    return not row.get("failure") and s.end_ns - s.start_ns < int(row.get("server_delay_ns") or 0)


def match(spans: list[Span], truth: list[dict[str, Any]], tol_ns: int = TOL_NS,
          max_candidates: int = 64) -> MatchResult:
    """One-to-one assignment per key: every (span, truth) pair where the span lies inside
    the truth interval (± tol_ns) and covers the server's delay is a candidate, scored by
    how much of the client's interval the span leaves out; pairs are taken best score
    first, then augmenting paths pair the rest. The delay is a candidate condition, not a
    check after the fact: among concurrent identical calls a greedy pick could otherwise
    hand a short span the row of a long call while a valid pairing exists."""
    res = MatchResult(truth=len(truth), spans=len(spans), matched=0)
    res.duplicate_keys = _overlapping_duplicates(spans)
    rows_by_key: dict[tuple[int, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in truth:
        rows_by_key[truth_key(row)].append(row)
    spans_by_key: dict[tuple[int, str, int], list[Span]] = defaultdict(list)
    for s in spans:
        spans_by_key[span_key(s)].append(s)
    for key in set(rows_by_key) | set(spans_by_key):
        rows = sorted(rows_by_key.get(key, []), key=lambda r: r["client_start_ns"])
        group = spans_by_key.get(key, [])
        starts = [r["client_start_ns"] for r in rows]
        longest = max((r["client_end_ns"] - r["client_start_ns"] for r in rows), default=0)
        pairs = []
        for si, s in enumerate(group):
            hi = bisect.bisect_right(starts, s.start_ns + tol_ns)
            cands = 0
            for ti in range(hi - 1, -1, -1):
                r = rows[ti]
                if r["client_start_ns"] + longest + tol_ns < s.end_ns:
                    break  # no row starting this early lasts until the span's end
                if s.end_ns <= r["client_end_ns"] + tol_ns and not _too_short(s, r):
                    score = abs(s.start_ns - r["client_start_ns"]) + abs(
                        r["client_end_ns"] - s.end_ns)
                    pairs.append((score, si, ti))
                    cands += 1
                    if cands >= max_candidates:
                        break
        pairs.sort()
        adj: list[list[int]] = [[] for _ in group]
        for _, si, ti in pairs:
            adj[si].append(ti)  # best candidates first
        span_to: list[int | None] = [None] * len(group)
        row_to: list[int | None] = [None] * len(rows)
        for _, si, ti in pairs:  # greedy by score, then augmenting paths for the rest
            if span_to[si] is None and row_to[ti] is None:
                span_to[si], row_to[ti] = ti, si
        for si in range(len(group)):
            if span_to[si] is None:
                _augment(si, adj, span_to, row_to)
        res.matched += sum(1 for ti in span_to if ti is not None)
        span_used = [t is not None for t in span_to]
        row_used = [t is not None for t in row_to]
        res.extra.extend(s for si, s in enumerate(group) if not span_used[si])
        res.lost.extend(r for ti, r in enumerate(rows) if not row_used[ti])
    return res


def _augment(si: int, adj: list[list[int]], span_to: list[int | None],
             row_to: list[int | None]) -> bool:
    """One BFS augmenting path from unmatched span `si` (Kuhn's algorithm): a greedy pick
    can take the only row another span fits; this re-pairs so both are matched."""
    came_from: dict[int, int] = {}
    queue = collections.deque([si])
    seen = {si}
    while queue:
        u = queue.popleft()
        for ti in adj[u]:
            if ti in came_from:
                continue
            came_from[ti] = u
            v = row_to[ti]
            if v is None:
                t: int | None = ti
                while t is not None:
                    u2 = came_from[t]
                    nxt = span_to[u2]
                    span_to[u2], row_to[t] = t, u2
                    t = None if u2 == si else nxt
                return True
            if v not in seen:
                seen.add(v)
                queue.append(v)
    return False


def _overlapping_duplicates(spans: list[Span]) -> int:
    """Spans sharing an identity while both are open: identities may recur over time (heap
    addresses and stream ids are reused after close), never concurrently."""
    by_key: dict[tuple[int, int, int], list[Span]] = defaultdict(list)
    for s in spans:
        by_key[s.key].append(s)
    dups = 0
    for group in by_key.values():
        group.sort(key=lambda s: s.start_ns)
        for a, b in itertools.pairwise(group):
            if b.start_ns < a.end_ns:
                dups += 1
    return dups
