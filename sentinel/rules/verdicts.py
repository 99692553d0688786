"""What the rule engine remembers between ticks so a tick costs what changed (see engine.py's docstring).

Per pipeline rule, each selected pipeline's last verdict — its findings as rendered, and the instant it must
be judged again — in a heap by that instant; per history, which pipelines changed since the rules last
judged them. Everything here is derived from the rules, the history and the calendars, and bounded by
rules × pipelines.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import meta

from sentinel.alerting.alert import LabelSet
from sentinel.model import PipelineKey
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules.base import RuleBase, Scope
from sentinel.rules.conditions import KINDS
from sentinel.rules.files import LoadedRules
from sentinel.rules.lifecycle import Instance


def _time_independent(rule: RuleBase) -> bool:
    """Whether the rule's condition declares its findings a function of the pipeline's history alone."""
    judge: Callable[[Any], bool] | None = getattr(KINDS[rule.when], "time_independent", None)
    return judge is not None and judge(rule)


QuietUntil = Callable[[Any, PipelineHistory, Scope], "datetime | None"]


@dataclass(frozen=True, slots=True)
class Shown:
    """One finding as it was rendered: reused while the finding's variables stay the same."""

    identity: tuple[tuple[str, str], ...]
    variables: Mapping[str, Any]
    labelset: LabelSet
    fingerprint: str
    annotations: LabelSet
    secondary: bool = False  # a second alert of its rule (`Finding.alertname`)


RenderCache = dict[tuple[tuple[str, str], ...], Shown]


@dataclass(slots=True)
class Verdict:
    version: int  # the pipeline's history version it was judged at
    until: datetime | None  # judge again from this instant on; None: only when the history changes
    seq: int  # tells this verdict's heap entry from older ones for the same pipeline
    shown: tuple[Shown, ...]


class RuleState:
    """One pipeline rule's verdicts per selected pipeline, their expiry, and its instances' timers."""

    def __init__(self, rule: RuleBase, instances: Mapping[str, Instance]) -> None:
        self.verdicts: dict[PipelineKey, Verdict] = {}
        # pipeline -> (info version, whether the rule's selector picks it); the selector is fixed per state
        self.selected: dict[PipelineKey, tuple[int, bool]] = {}
        self.heap: list[tuple[datetime, int, PipelineKey]] = []
        self._seq = itertools.count()
        # fingerprint -> pipeline of every instance whose finding currently stands
        self.live: dict[str, PipelineKey] = {}
        # fingerprints whose lifecycle may move with time alone (see `_tick_timers`). Instances that existed
        # before this state did (restored, or from before a reload) start here, so that the first tick that
        # does not find them again steps them like any other vanished finding.
        self.ticking: set[str] = set(instances)
        self.time_independent = _time_independent(rule)
        self.quiet: QuietUntil | None = getattr(KINDS[rule.when], "quiet_until", None)
        self.used = _template_fields(rule)
        self.reads_now = self.used is None or "now" in self.used

    def until(self, rule: RuleBase, ph: PipelineHistory, scope: Scope, found: bool, now: datetime) -> datetime | None:
        if found and self.reads_now:
            return now  # a template reads `now`: rendered afresh on every tick
        if self.time_independent:
            return None
        if found or self.quiet is None:
            return now  # judged again on the next tick
        return self.quiet(rule, ph, scope)

    def record(self, key: PipelineKey, version: int, until: datetime | None, shown: tuple[Shown, ...]) -> None:
        seq = next(self._seq)
        self.verdicts[key] = Verdict(version, until, seq, shown)
        if until is not None:
            heapq.heappush(self.heap, (until, seq, key))
            if len(self.heap) > 2 * len(self.verdicts) + 1024:
                # Superseded entries pile up for pipelines judged again before they expired: drop them.
                self.heap = [(v.until, v.seq, k) for k, v in self.verdicts.items() if v.until is not None]
                heapq.heapify(self.heap)

    def expired(self, now: datetime) -> list[PipelineKey]:
        out: list[PipelineKey] = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            v = self.verdicts.get(key)
            if v is not None and v.seq == seq:
                out.append(key)
        return out

    def unchanged(self, before: Mapping[str, Any], now: Mapping[str, Any], rule_templates: bool = True) -> bool:
        if self.reads_now:
            return False
        if before is now:
            return True
        if self.used is None or not rule_templates:
            return before == now
        return all(before.get(n) == now.get(n) for n in self.used)

    def touch_live(self, insts: Mapping[str, Instance], now: datetime) -> None:
        # A standing finding keeps its instance active: `keep_firing_for` counts from the last tick it stood.
        for fp in self.live:
            inst = insts.get(fp)
            if inst is not None:
                inst.last_active = now


_PARSER = jinja2.Environment()


def _template_fields(rule: RuleBase) -> frozenset[str] | None:
    """The variables the rule's annotation templates read (None: unknown, assume all of them)."""
    names: set[str] = set()
    for source in rule.annotations.values():
        if "{" not in source:
            continue
        try:
            names |= meta.find_undeclared_variables(_PARSER.parse(source))
        except jinja2.TemplateError:
            return None
    return frozenset(names)


@dataclass
class EvalCaches:
    """Work a tick would otherwise redo for 10,000s of pipelines that did not change since the last one.

    All of it is derived from `rules`, `history`, `source_labels` and the calendars (compared by identity
    on every evaluation; a new one of any replaces the whole cache) and is bounded by rules × pipelines.
    """

    rules: LoadedRules
    history: History | None
    source_labels: Mapping[str, Mapping[str, str]]
    calendars: Any
    # Every pipeline in history order, its position, and the history version every pipeline rule last
    # judged it at. History never drops a pipeline and a dict keeps insertion order, so positions hold.
    order: list[PipelineHistory] = field(default_factory=list)
    position: dict[PipelineKey, int] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    info_versions: list[int] = field(default_factory=list)
    info_changed: bool = False
    states: dict[str, RuleState] = field(default_factory=dict)
    # The pipelines changed since the last full pass (`History.watch`); `logged`: every pipeline in `order`
    # reports its changes there, so a full pass may look at the logged ones only.
    log: Any = None
    logged: bool = True
    scanned: bool = False  # a full pass happened since `log` exists: it holds every change since
    added: list[int] = field(default_factory=list)  # positions of pipelines new since the last full pass
    # source rules: rule id -> finding labels -> what the finding rendered to
    rendered: dict[str, RenderCache] = field(default_factory=dict)

    def rule_state(self, rid: str, rule: RuleBase, instances: Mapping[str, Instance]) -> RuleState:
        st = self.states.get(rid)
        if st is None:
            st = self.states[rid] = RuleState(rule, instances)
        return st

    def take_changed(self, history: History, only: set[PipelineKey] | None) -> dict[PipelineKey, PipelineHistory]:
        """The pipelines to judge afresh: those in `only`, else every pipeline whose history changed since
        the rules last judged it. One pass over the pipelines per tick, shared by every rule, in C loops:
        at 10,000 pipelines a Python loop alone would cost milliseconds."""
        pipelines = history.pipelines
        log = self.log
        if log is None and hasattr(history, "watch"):
            log = self.log = history.watch()  # before the first full pass: it sees whatever changes after
        start = len(self.order)
        if len(pipelines) != len(self.order):
            if len(pipelines) < len(self.order):
                self.order, self.position, self.versions, self.info_versions = [], {}, [], []
                self.logged, self.scanned, self.added, start = True, False, [], 0
            for key, ph in itertools.islice(pipelines.items(), start, None):
                self.position[key] = len(self.order)
                self.order.append(ph)
                self.versions.append(-1)
                self.info_versions.append(-1)
                self.added.append(len(self.order) - 1)
                if self.logged and not history.watches(ph):
                    self.logged = False  # made outside `History.pipeline`: its changes are not logged
        if only is not None:
            picked = [self.position[k] for k in only if k in self.position]
        elif log is not None and self.scanned and self.logged:
            # Only logged pipelines (and new ones) can differ from the version last judged.
            order, versions, position = self.order, self.versions, self.position
            candidates = set(self.added)
            for ph in log.pipelines:
                i = position.get(ph.key)
                if i is None or order[i] is not ph:
                    candidates = set(range(len(order)))  # a pipeline replaced under its key: look at all
                    break
                candidates.add(i)
            picked = sorted(i for i in candidates if versions[i] != order[i].version)
            log.pipelines.clear()
            self.added = []
        else:
            current = list(map(_VERSION, self.order))
            picked = list(itertools.compress(range(len(current)), map(operator.ne, current, self.versions)))
            if log is not None:
                log.pipelines.clear()
                self.scanned = True
            self.added = []
        out: dict[PipelineKey, PipelineHistory] = {}
        for i in picked:
            ph = self.order[i]
            out[ph.key] = ph
            self.versions[i] = ph.version
            if self.info_versions[i] != ph.info_version:
                self.info_versions[i] = ph.info_version
                self.info_changed = True
        return out


_VERSION = operator.attrgetter("version")
