"""When may a replay skip a full evaluation tick? Only when the engine itself would do nothing on it.

A full tick judges (a) pipelines whose history changed since they were last judged, (b) pipelines whose
verdict expires by now (a condition's `quiet_until`: a deadline, a staleness threshold), (c) instances whose
lifecycle moves with time alone (pending `for:`, resolving, retention), (d) every source rule, and it
(e) refreshes the last-active instant of standing findings (what `keep_firing_for` counts from). For (c)
the instants are known (`for:` over, `keep_firing_for` over, the resolved retention over). When (b)–(e)
are all empty, the tick is exactly an evaluation of the changed pipelines (a), which
`evaluate(only=…)` does without visiting every pipeline — and when nothing changed either, nothing at all.

This reads the engine's per-rule state (`_caches.states`); whatever is missing or unexpected answers
"tick", so an engine change can only make a replay slower, never different. A replay has no health
history (every source stays reachable without component detail), so source rules are judged at the
first tick and then only while one of their instances exists.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sentinel.rules.engine import RuleEngine
from sentinel.rules.lifecycle import RESOLVED_RETENTION, Instance


def needs_full_tick(engine: RuleEngine, now: datetime) -> bool:
    try:
        return _needs(engine, now)
    except (AttributeError, KeyError, TypeError, IndexError):
        return True


def _needs(engine: RuleEngine, now: datetime) -> bool:
    caches: Any = engine._caches
    if caches is None or getattr(caches, "history", None) is None:
        return True
    states: dict[str, Any] = caches.states
    for _, group in engine.rules.groups():
        for rule in group.rules:
            rid = f"{group.name}/{rule.alert}"
            if rule.scope != "pipeline":
                if engine.instances.get(rid):
                    return True
                continue
            st = states.get(rid)
            if st is None or _ticking_due(st, engine.instances.get(rid, {}), rule, now):
                return True
            heap = st.heap
            if heap and heap[0][0] <= now:
                return True
            if st.live and rule.keep_firing_for > timedelta(0):
                return True
    return False


def _ticking_due(st: Any, insts: dict[str, Instance], rule: Any, now: datetime) -> bool:
    """Whether a tick now would move some instance that moves with time alone (lifecycle.step's clock)."""
    for fp in st.ticking:
        inst = insts.get(fp)
        if inst is None:
            return True
        if fp in st.live:
            if inst.state != "pending" or inst.active_at + rule.for_ <= now:
                return True  # `for:` is over (or the tick would just drop it from the ticking set)
            continue
        if inst.state == "firing" and rule.keep_firing_for and inst.last_active + rule.keep_firing_for > now:
            continue
        if inst.state == "resolved" and inst.resolved_at is not None and now - inst.resolved_at <= RESOLVED_RETENTION:
            continue
        return True
    return False
