"""Evaluates every rule over the history and keeps each alert instance's lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sentinel.alerting.alert import Alert, fingerprint, labelset
from sentinel.model import PipelineKey
from sentinel.observe.history import History
from sentinel.rules.base import Evaluation, RuleBase, Scope
from sentinel.rules.conditions import evaluator
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
        for _, group in self.rules.groups():
            for rule in group.rules:
                rid = f"{group.name}/{rule.alert}"
                selector = rule.pipelines or group.pipelines
                if rule.scope == "pipeline":
                    pipelines = [ph for key, ph in _candidates(history, only) if selector.matches(key, ph.info)]
                    scope = Scope(now, history, pipelines, [], group.calendar, self.extras)
                    in_scope = _pipeline_scope(only)
                elif only is not None:
                    continue  # source rules run on ticks and health changes, not per finished run
                else:
                    sources = [s for s in history.health if selector.matches_source(s)]
                    scope = Scope(now, history, [], sources, group.calendar, self.extras)
                    in_scope = _everything
                self._apply(rid, group, rule, evaluator(rule.when)(rule, scope), now, in_scope)
        return self.alerts()

    def alerts(self) -> list[Alert]:
        return [
            inst.to_alert()
            for insts in self.instances.values()
            for inst in insts.values()
            if inst.state in ("firing", "resolved")
        ]

    def instance_list(self) -> list[Instance]:
        return [inst for insts in self.instances.values() for inst in insts.values()]

    def _apply(
        self,
        rid: str,
        group: RuleGroup,
        rule: RuleBase,
        ev: Evaluation,
        now: datetime,
        in_scope: Callable[[Mapping[str, str]], bool],
    ) -> None:
        insts = self.instances.setdefault(rid, {})
        seen: set[str] = set()
        for f in ev.findings:
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
            seen.add(fp)
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
            inst = insts.get(fp)
            if inst is None:
                inst = Instance(fp, rid, ls, annotations, "pending", now, now)
            else:
                inst.annotations = annotations
            self._store(rid, fp, step(inst, True, now, rule.for_, rule.keep_firing_for))
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


def _candidates(history: History, only: set[PipelineKey] | None) -> list[tuple[PipelineKey, Any]]:
    if only is None:
        return list(history.pipelines.items())
    return [(k, history.pipelines[k]) for k in only if k in history.pipelines]


_ZERO = timedelta(0)
