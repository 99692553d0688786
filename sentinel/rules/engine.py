"""Evaluates every rule over the history and keeps each alert instance's lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sentinel.alerting.alert import Alert, LabelSet, fingerprint, labelset
from sentinel.model import PipelineKey
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules import dependencies
from sentinel.rules.base import Evaluation, Finding, PipelineSelector, RuleBase, Scope
from sentinel.rules.conditions import KINDS, evaluator
from sentinel.rules.files import LoadedRules, RuleGroup
from sentinel.rules.lifecycle import Instance, step
from sentinel.rules.templates import render


class RuleEngine:
    def __init__(self, rules: LoadedRules, source_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.rules = rules
        self.source_labels = dict(source_labels or {})
        # rule id -> fingerprint -> instance; indexed by rule so one rule's update never scans the others
        self.instances: dict[str, dict[str, Instance]] = {}
        self.dirty: set[str] = set()
        self.forgotten: set[str] = set()
        self.extras: dict[str, Any] = {}  # shared read-only context for conditions, e.g. calendars
        self._dependency_rules: tuple[LoadedRules, dict[str, dependencies.RuleDeps]] | None = None
        self._assets = dependencies.AssetIndex()
        self._caches = _Caches(rules, None, self.source_labels)

    # -- persistence -------------------------------------------------------------------------------
    def restore(self, dumps: Mapping[str, dict[str, Any]]) -> None:
        for fp, d in dumps.items():
            inst = Instance.restore(d)
            self.instances.setdefault(inst.rule, {})[fp] = inst

    def take_changes(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        by_fp = {fp: inst for insts in self.instances.values() for fp, inst in insts.items() if fp in self.dirty}
        changed = {fp: inst.dump() for fp, inst in by_fp.items()}
        gone = self.forgotten - set(changed)
        self.dirty.clear()
        self.forgotten.clear()
        return changed, gone

    def replace_rules(self, rules: LoadedRules, now: datetime) -> None:
        """Swap rule files; instances of rules that no longer exist resolve rather than vanish silently."""
        self.rules = rules
        self._caches = _Caches(rules, None, self.source_labels)
        live = {f"{g.name}/{r.alert}" for _, g in rules.groups() for r in g.rules}
        for rid, insts in self.instances.items():
            if rid in live:
                continue
            for fp, inst in list(insts.items()):
                new = step(inst, False, now, _ZERO, _ZERO)
                self._store(rid, fp, new)

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, history: History, now: datetime, only: set[PipelineKey] | None = None) -> list[Alert]:
        """Evaluate all rules (or only pipeline rules for the pipelines in `only`) and return the alerts
        the notification pipeline should know about: firing and recently resolved."""
        caches = self._caches_for(history)
        for _, group in self.rules.groups():
            for rule in group.rules:
                rid = f"{group.name}/{rule.alert}"
                selector = rule.pipelines or group.pipelines
                if rule.scope == "pipeline":
                    pipelines = caches.select(selector, history, only)
                    scope = Scope(now, history, pipelines, [], group.calendar, self.extras)
                    in_scope = _pipeline_scope(only)
                    if _time_independent(rule):
                        ev = caches.stable_findings(rid, rule, scope)
                    else:
                        ev = evaluator(rule.when)(rule, scope)
                elif only is not None:
                    continue  # source rules run on ticks and health changes, not per finished run
                else:
                    sources = [s for s in history.health if selector.matches_source(s)]
                    scope = Scope(now, history, [], sources, group.calendar, self.extras)
                    in_scope = _everything
                    ev = evaluator(rule.when)(rule, scope)
                self._apply(rid, group, rule, ev, now, in_scope, caches.rendered.setdefault(rid, {}), only is None)
        self._apply_dependencies(history, now)
        return self.alerts()

    def alerts(self) -> list[Alert]:
        # An instance inhibited by an upstream root cause (`depends_on`) stays out of the dispatcher.
        return [
            inst.to_alert()
            for insts in self.instances.values()
            for inst in insts.values()
            if inst.state in ("firing", "resolved") and not inst.inhibited_by
        ]

    # -- depends_on hook: kept apart so the evaluation loop above can change freely ------------------
    def _apply_dependencies(self, history: History, now: datetime) -> None:
        if self._dependency_rules is None or self._dependency_rules[0] is not self.rules:
            self._dependency_rules = (self.rules, dependencies.rule_index(self.rules))
        verdicts = dependencies.resolve(self.instance_list(), self._dependency_rules[1], history, now, self._assets)
        for (rid, fp), verdict in verdicts.items():
            inst = self.instances[rid][fp]
            inst.annotations, inst.inhibited_by = verdict.annotations, verdict.inhibited_by
            self.dirty.add(fp)

    def instance_list(self) -> list[Instance]:
        return [inst for insts in self.instances.values() for inst in insts.values()]

    def _caches_for(self, history: History) -> _Caches:
        # Everything cached is derived from the rules, the history object and the source labels: a new one
        # of any of them (a reload, a test swapping `rules`) starts afresh rather than trusting old entries.
        c = self._caches
        if c.rules is not self.rules or c.history is not history or c.source_labels is not self.source_labels:
            c = self._caches = _Caches(self.rules, history, self.source_labels)
        return c

    def _apply(
        self,
        rid: str,
        group: RuleGroup,
        rule: RuleBase,
        ev: Evaluation,
        now: datetime,
        in_scope: Callable[[Mapping[str, str]], bool],
        rendered: _RenderCache,
        full: bool,
    ) -> None:
        insts = self.instances.setdefault(rid, {})
        seen: set[str] = set()
        # Templates reading `now` change every tick; only the others may reuse last tick's text.
        reuse = not any("now" in source for source in rule.annotations.values())
        current: set[tuple[tuple[str, str], ...]] = set()
        for f in ev.findings:
            identity = tuple(f.labels.items())
            hit = rendered.get(identity)
            if hit is not None and reuse and (hit.variables is f.variables or hit.variables == f.variables):
                ls, fp, annotations = hit.labelset, hit.fingerprint, hit.annotations
            else:
                labels = {
                    **self.source_labels.get(f.labels.get("source", ""), {}),
                    **group.labels,
                    **rule.labels,
                    **f.labels,
                    "alertname": rule.alert,
                    "severity": rule.severity,
                }
                ls = labelset(labels)
                fp = fingerprint(ls)
                variables = {
                    **f.variables,
                    "labels": labels,
                    "source": labels.get("source", ""),
                    "pipeline": labels.get("pipeline", ""),
                    "severity": rule.severity,
                    "alertname": rule.alert,
                    "now": now,
                }
                annotations = labelset({k: render(v, variables) for k, v in rule.annotations.items()})
                rendered[identity] = _Rendered(f.variables, ls, fp, annotations)
            seen.add(fp)
            current.add(identity)
            inst = insts.get(fp)
            if inst is None:
                inst = Instance(fp, rid, ls, annotations, "pending", now, now)
            else:
                inst.annotations = annotations
            self._store(rid, fp, step(inst, True, now, rule.for_, rule.keep_firing_for))
        if full:
            # A full tick sees every finding of the rule: what it did not find is gone, and so is its text.
            for identity in [k for k in rendered if k not in current]:
                del rendered[identity]
        for fp, inst in list(insts.items()):
            if fp in seen:
                continue
            labels = dict(inst.labels)
            if not in_scope(labels) or not ev.settled(labels):
                continue
            before = (inst.state, inst.resolved_at)
            new = step(inst, False, now, rule.for_, rule.keep_firing_for)
            if new is None or (new.state, new.resolved_at) != before:
                self._store(rid, fp, new)

    def _store(self, rid: str, fp: str, inst: Instance | None) -> None:
        insts = self.instances.setdefault(rid, {})
        if inst is None:
            insts.pop(fp, None)
            self.forgotten.add(fp)
            self.dirty.discard(fp)
        else:
            insts[fp] = inst
            self.dirty.add(fp)


def _pipeline_scope(only: set[PipelineKey] | None) -> Callable[[Mapping[str, str]], bool]:
    if only is None:
        return _everything
    return lambda labels: PipelineKey(labels.get("source", ""), labels.get("pipeline", "")) in only


def _everything(_labels: Mapping[str, str]) -> bool:
    return True


def _time_independent(rule: RuleBase) -> bool:
    """Whether the rule's condition declares its findings a function of the pipeline's history alone."""
    judge: Callable[[Any], bool] | None = getattr(KINDS[rule.when], "time_independent", None)
    return judge is not None and judge(rule)


@dataclass(frozen=True, slots=True)
class _Rendered:
    """What `_apply` built for one finding: reused while the finding's variables stay the same."""

    variables: Mapping[str, Any]
    labelset: LabelSet
    fingerprint: str
    annotations: LabelSet


_RenderCache = dict[tuple[tuple[str, str], ...], _Rendered]
_StableEntry = tuple[PipelineHistory, int, list[Finding]]


@dataclass
class _Caches:
    """Work a tick would otherwise redo for 10,000s of pipelines that did not change since the last one.

    All of it is derived from `rules`, `history` and `source_labels` (compared by identity on every
    evaluation; a new one of any replaces the whole cache) and is bounded by rules × pipelines.
    """

    rules: LoadedRules
    history: History | None
    source_labels: Mapping[str, Mapping[str, str]]
    # id(selector) -> (number of pipelines when selected, selection). Source/pipeline globs match keys
    # only and History never drops a pipeline, so a selection holds until a pipeline is added. Selectors
    # with tags read `info`, which may change any time: those are matched afresh on every tick.
    selections: dict[int, tuple[int, list[PipelineHistory]]] = field(default_factory=dict)
    # rule id -> pipeline -> (that pipeline's history, its version, the findings). For conditions whose
    # findings depend on the history alone (`time_independent`): recomputed only when the version moves.
    stable: dict[str, dict[PipelineKey, _StableEntry]] = field(default_factory=dict)
    # rule id -> finding labels -> what the finding rendered to; pruned on every full tick to the current
    # findings. Labels, fingerprint and templates are then redone only for findings whose variables
    # changed (or whose templates read `now`).
    rendered: dict[str, _RenderCache] = field(default_factory=dict)

    def select(
        self, selector: PipelineSelector, history: History, only: set[PipelineKey] | None
    ) -> list[PipelineHistory]:
        """The selected pipelines, in history order. Shared between ticks: callers must not mutate it."""
        if only is not None or selector.tags:
            return [ph for key, ph in _candidates(history, only) if selector.matches(key, ph.info)]
        entry = self.selections.get(id(selector))
        if entry is None or entry[0] != len(history.pipelines):
            picked = [ph for key, ph in history.pipelines.items() if selector.matches(key, ph.info)]
            entry = self.selections[id(selector)] = (len(history.pipelines), picked)
        return entry[1]

    def stable_findings(self, rid: str, rule: RuleBase, scope: Scope) -> Evaluation:
        """The condition's findings, re-judging only pipelines whose history changed since last asked."""
        cache = self.stable.setdefault(rid, {})
        # Per pipeline in selection order, the non-empty cached findings and an empty list to fill for each
        # stale pipeline: flattened, the findings come in the order a full evaluation gives them.
        parts: list[list[Finding]] = []
        stale: dict[PipelineKey, list[Finding]] = {}
        for ph in scope.pipelines:
            entry = cache.get(ph.key)
            if entry is not None and entry[0] is ph and entry[1] == ph.version:
                if entry[2]:
                    parts.append(entry[2])
            else:
                parts.append(stale.setdefault(ph.key, []))
        if stale:
            judged = [ph for ph in scope.pipelines if ph.key in stale]
            for f in evaluator(rule.when)(rule, replace(scope, pipelines=judged)).findings:
                stale[PipelineKey(f.labels["source"], f.labels["pipeline"])].append(f)
            for ph in judged:
                cache[ph.key] = (ph, ph.version, stale[ph.key])
        return Evaluation([f for part in parts for f in part])


def _candidates(history: History, only: set[PipelineKey] | None) -> list[tuple[PipelineKey, Any]]:
    if only is None:
        return list(history.pipelines.items())
    return [(k, history.pipelines[k]) for k in only if k in history.pipelines]


_ZERO = timedelta(0)
