"""Runs of one system ordered by instants derived from them, kept in step with the world's change feed.

The API faces filter on times other than a run's last change (a task's update time, a flow run's start or
end). Finding those from `World.changed_since(lo)` costs everything that changed after `lo`, so reading a
long history window by window costs the square of its length. This index answers "which runs have an
instant in [lo, hi]" by bisection instead. It is a superset finder only: callers still apply their exact
filter to the runs it returns, so a stale or extra entry can cost time but never change an answer.

It catches up from the change feed on each read (every mutation of a run touches it, see `World.touch`);
a run dropped from the world leaves entries behind that readers skip and the next rebuild drops.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime

from sentinel.sim.world import SimRun, System, World

__all__ = ["TimeIndex"]

Instants = Callable[[SimRun], tuple[datetime, ...]]
_Entry = tuple[datetime, str, int]  # (instant, run id, position in the run's instants)

# A catch-up bigger than this share of the index re-sorts it whole instead of inserting one by one
# (each list insertion moves the tail, so thousands of them cost more than one sort).
_REBUILD_SHARE = 16
_REBUILD_MIN = 64
_DEAD_SLACK = 1_000  # entries of removed runs tolerated before a rebuild prunes them


def _instant(entry: _Entry) -> datetime:
    return entry[0]


class TimeIndex:
    def __init__(self, world: World, system: System, instants: Instants) -> None:
        self.world = world
        self.system = system
        self.instants = instants
        self._entries: list[_Entry] = []
        self._of: dict[str, tuple[datetime, ...]] = {}  # run id -> its instants as indexed
        self._synced: datetime | None = None
        self._version = -1

    def entries(self, lo: datetime | None, hi: datetime | None) -> list[tuple[datetime, str, int]]:
        """(instant, run id, which of the run's instants) for every instant in [lo, hi] (None: open), oldest first.

        Current as of this call, except that a run dropped from the world may still have entries here.
        """
        self._sync()
        entries = self._entries
        start = 0 if lo is None else bisect.bisect_left(entries, lo, key=_instant)
        stop = len(entries) if hi is None else bisect.bisect_right(entries, hi, key=_instant)
        return entries[start:stop]

    def between(self, lo: datetime, hi: datetime | None) -> list[SimRun]:
        """Runs with an indexed instant in [lo, hi] (hi None: no upper bound), each once, by first instant."""
        runs = self.world.runs
        seen: set[str] = set()
        out: list[SimRun] = []
        for _, run_id, _ in self.entries(lo, hi):
            if run_id in seen:
                continue
            seen.add(run_id)
            run = runs.get(run_id)
            if run is not None and run.system == self.system:
                out.append(run)
        return out

    def _sync(self) -> None:
        if self.world.version == self._version:
            return
        self._version = self.world.version
        # At or after the last instant seen: touches at that same instant may have come after the last sync.
        changed = self.world.changed_since(self.system, self._synced)
        if not changed:
            return
        self._synced = changed[-1].updated_at
        stale = len(self._of) > len(self.world.runs) + _DEAD_SLACK
        if stale or len(changed) > len(self._entries) // _REBUILD_SHARE + _REBUILD_MIN:
            for run in changed:
                self._of[run.id] = self.instants(run)
            self._rebuild(prune=stale)
            return
        for run in changed:
            new = self.instants(run)
            old = self._of.get(run.id)
            if old == new:
                continue
            for k, at in enumerate(old or ()):
                i = bisect.bisect_left(self._entries, (at, run.id, k))
                if i < len(self._entries) and self._entries[i] == (at, run.id, k):
                    del self._entries[i]
            for k, at in enumerate(new):
                bisect.insort(self._entries, (at, run.id, k))
            self._of[run.id] = new

    def _rebuild(self, prune: bool) -> None:
        if prune:
            runs = self.world.runs
            self._of = {rid: times for rid, times in self._of.items() if rid in runs}
        self._entries = sorted((at, rid, k) for rid, times in self._of.items() for k, at in enumerate(times))
