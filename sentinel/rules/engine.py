"""Evaluates every rule over the history and keeps each alert instance's lifecycle.

A tick costs what changed, not what exists. Per pipeline rule the engine keeps each selected pipeline's
last verdict (its findings, rendered) with the instant it must be judged again; a pipeline is judged only
when its history changed (`PipelineHistory.version`) or that instant has come:

- a time-independent condition (`time_independent(rule)` in its module) never expires: only a change
  can alter its verdict;
- a pipeline with findings under a time-dependent condition is judged every tick (its `age`, `minutes_late`
  ... move with `now`, and so may the verdict);
- a pipeline without findings is judged again at the condition's `quiet_until(rule, ph, scope)` — the
  earliest instant anything could be found with the history as it is (a deadline, `last success +
  max_age`, `scheduled + grace`) — or every tick when the condition has no `quiet_until`.

Instances are stepped only when their pipeline's findings changed, or when their lifecycle moves with time
alone (pending under `for`, held by `keep_firing_for`, resolved and waiting to be forgotten, held while a
source cannot be judged). Firing instances whose finding stands only get `last_active` moved on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sentinel.alerting.alert import Alert, LabelSet, fingerprint, labelset
from sentinel.model import PipelineKey
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules import dependencies
from sentinel.rules.base import DEPENDENCY_ANNOTATIONS, Evaluation, Finding, RuleBase, Scope
from sentinel.rules.conditions import evaluator
from sentinel.rules.files import LoadedRules, RuleGroup
from sentinel.rules.lifecycle import Instance, step
from sentinel.rules.templates import render
from sentinel.rules.verdicts import EvalCaches, RenderCache, RuleState, Shown


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
        self._caches = EvalCaches(rules, None, self.source_labels, None)
        # What `depends_on` must look at again: the instances whose state moved since it last looked, or
        # everything after the rules, the pipelines' metadata or the instances were replaced. An evaluation
        # that moved nothing keeps the last verdicts (they are idempotent).
        self._moved: dict[tuple[str, str], PipelineKey] = {}
        self._resolve_all = True
        # fingerprint -> (annotations, active_at, resolved_at, alert): `alerts()` hands over thousands per tick
        self._alerts: dict[str, tuple[LabelSet, datetime, datetime | None, Alert]] = {}
        # Fingerprints of a rule's second alert (a deadline's DeadlineAtRisk): kept out of `depends_on`,
        # whose roles are decided by the rule's kind and mean the rule's own alert.
        self._secondary: set[str] = set()

    # -- persistence -------------------------------------------------------------------------------
    def restore(self, dumps: Mapping[str, dict[str, Any]]) -> None:
        for fp, d in dumps.items():
            inst = Instance.restore(d)
            self.instances.setdefault(inst.rule, {})[fp] = inst
            if dict(inst.labels).get("alertname") != inst.rule.rsplit("/", 1)[-1]:
                self._secondary.add(fp)
        self._caches = EvalCaches(self.rules, None, self.source_labels, None)  # restored instances need a sweep
        self._resolve_all = True

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
        self._caches = EvalCaches(rules, None, self.source_labels, None)
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
        changed = caches.take_changed(history, only)
        if caches.info_changed:
            caches.info_changed = False
            self._resolve_all = True
        for _, group in self.rules.groups():
            for rule in group.rules:
                rid = f"{group.name}/{rule.alert}"
                if rule.scope == "pipeline":
                    self._pipeline_rule(rid, group, rule, history, now, changed, only)
                elif only is None:  # source rules run on ticks and health changes, not per finished run
                    selector = rule.pipelines or group.pipelines
                    sources = [s for s in history.health if selector.matches_source(s)]
                    scope = Scope(now, history, [], sources, group.calendar, self.extras)
                    ev = evaluator(rule.when)(rule, scope)
                    self._apply(rid, group, rule, ev, now, caches.rendered.setdefault(rid, {}))
        if self._resolve_all or self._moved:
            self._apply_dependencies(history, now, None if self._resolve_all else self._moved)
            self._moved, self._resolve_all = {}, False
        return self.alerts()

    def alerts(self) -> list[Alert]:
        # An instance inhibited by an upstream root cause (`depends_on`) stays out of the dispatcher.
        out: list[Alert] = []
        cache = self._alerts
        for insts in self.instances.values():
            for fp, inst in insts.items():
                if inst.inhibited_by or (inst.state != "firing" and inst.state != "resolved"):
                    continue
                hit = cache.get(fp)
                if (
                    hit is None
                    or hit[0] is not inst.annotations
                    or hit[1] != inst.active_at
                    or hit[2] != inst.resolved_at
                    or hit[3].labels is not inst.labels
                ):
                    hit = cache[fp] = (inst.annotations, inst.active_at, inst.resolved_at, inst.to_alert())
                out.append(hit[3])
        if len(cache) > 2 * len(out) + 1024:
            live = {a.fingerprint for a in out}
            self._alerts = {fp: v for fp, v in cache.items() if fp in live}
        return out

    # -- depends_on hook: kept apart so the evaluation loop above can change freely ------------------
    def _apply_dependencies(
        self, history: History, now: datetime, moved: Mapping[tuple[str, str], PipelineKey] | None
    ) -> None:
        if self._dependency_rules is None or self._dependency_rules[0] is not self.rules:
            self._dependency_rules = (self.rules, dependencies.rule_index(self.rules))
        instances = self.instance_list()
        if self._secondary:
            instances = [i for i in instances if i.fingerprint not in self._secondary]
            if moved is not None:
                moved = {k: v for k, v in moved.items() if k[1] not in self._secondary}
        verdicts = dependencies.resolve(instances, self._dependency_rules[1], history, now, self._assets, moved)
        for (rid, fp), verdict in verdicts.items():
            inst = self.instances[rid][fp]
            inst.annotations, inst.inhibited_by = verdict.annotations, verdict.inhibited_by
            self.dirty.add(fp)

    def instance_list(self) -> list[Instance]:
        return [inst for insts in self.instances.values() for inst in insts.values()]

    def _caches_for(self, history: History) -> EvalCaches:
        # Everything cached is derived from the rules, the history object, the source labels and the
        # calendars: a new one of any of them (a reload, a test swapping `rules`) starts afresh rather
        # than trusting old entries.
        c = self._caches
        calendars = self.extras.get("calendars")
        if (
            c.rules is not self.rules
            or c.history is not history
            or c.source_labels is not self.source_labels
            or c.calendars is not calendars
        ):
            c = self._caches = EvalCaches(self.rules, history, self.source_labels, calendars)
            self._resolve_all = True
        return c

    # -- pipeline rules: incremental -------------------------------------------------------------------
    def _pipeline_rule(
        self,
        rid: str,
        group: RuleGroup,
        rule: RuleBase,
        history: History,
        now: datetime,
        changed: Mapping[PipelineKey, PipelineHistory],
        only: set[PipelineKey] | None,
    ) -> None:
        insts = self.instances.setdefault(rid, {})
        st = self._caches.rule_state(rid, rule, insts)
        selector = rule.pipelines or group.pipelines
        judge: dict[PipelineKey, PipelineHistory] = {}
        dropped: list[PipelineKey] = []
        selected = st.selected
        for key, ph in changed.items():
            # Selection reads the key and the pipeline's info only: a run changing it cannot move it.
            hit = selected.get(key)
            if hit is None or hit[0] != ph.info_version:
                hit = selected[key] = (ph.info_version, selector.matches(key, ph.info))
            if hit[1]:
                judge[key] = ph
            elif key in st.verdicts:
                dropped.append(key)
        if only is None:
            for key in st.expired(now):
                if key not in judge:
                    judge[key] = history.pipelines[key]
        if not judge and not dropped and not st.ticking:
            if only is None:
                st.touch_live(insts, now)
            return
        scope = Scope(now, history, list(judge.values()), [], group.calendar, self.extras)
        ev = evaluator(rule.when)(rule, scope)
        found: dict[PipelineKey, list[Finding]] = {}
        for f in ev.findings:
            key = PipelineKey(f.labels.get("source", ""), f.labels.get("pipeline", ""))
            found.setdefault(key, []).append(f)
        stepped: set[str] = set()
        for key, ph in judge.items():
            fs = found.get(key, ())
            until = st.until(rule, ph, scope, bool(fs), now)
            old = st.verdicts.get(key)
            shown = self._show(group, rule, st, fs, old.shown if old is not None else (), now)
            st.record(key, ph.version, until, shown)
            self._transition(rid, rule, st, old.shown if old is not None else (), shown, key, now, stepped)
        for key in dropped:
            old = st.verdicts.pop(key)
            self._transition(rid, rule, st, old.shown, (), key, now, stepped)
        self._tick_timers(rid, rule, st, ev, now, only, stepped)
        if only is None:
            st.touch_live(insts, now)

    def _show(
        self,
        group: RuleGroup,
        rule: RuleBase,
        st: RuleState,
        findings: Iterable[Finding],
        old: tuple[Shown, ...],
        now: datetime,
    ) -> tuple[Shown, ...]:
        """Each finding with its labels, fingerprint and annotations, reusing last time's where the finding
        is the same and its templates read nothing that changed."""
        prev = {s.identity: s for s in old} if old else {}
        out: list[Shown] = []
        for f in findings:
            identity = tuple(f.labels.items())
            hit = prev.get(identity)
            if hit is not None and st.unchanged(hit.variables, f.variables, f.annotations is None):
                out.append(hit)
                continue
            labels = {
                **self.source_labels.get(f.labels.get("source", ""), {}),
                **group.labels,
                **rule.labels,
                **f.labels,
                "alertname": f.alertname or rule.alert,
                "severity": f.severity or rule.severity,
            }
            if hit is not None:
                ls, fp = hit.labelset, hit.fingerprint  # same identity, same labels
            else:
                ls = labelset(labels)
                fp = fingerprint(ls)
            variables = {
                **f.variables,
                "labels": labels,
                "source": labels.get("source", ""),
                "pipeline": labels.get("pipeline", ""),
                "severity": labels["severity"],
                "alertname": labels["alertname"],
                "now": now,
            }
            annotations = labelset({k: render(v, variables) for k, v in _annotations_of(rule, f).items()})
            out.append(Shown(identity, f.variables, ls, fp, annotations, f.alertname is not None))
        return tuple(out)

    def _transition(
        self,
        rid: str,
        rule: RuleBase,
        st: RuleState,
        old: tuple[Shown, ...],
        new: tuple[Shown, ...],
        key: PipelineKey,
        now: datetime,
        stepped: set[str],
    ) -> None:
        """Step the instances of one pipeline whose findings were just judged: new or changed findings
        become (or stay) active; vanished ones are left to `_tick_timers`, which knows whether the
        condition could judge them."""
        insts = self.instances[rid]
        before = {s.fingerprint: s for s in old}
        for s in new:
            fp = s.fingerprint
            inst = insts.get(fp)
            if before.pop(fp, None) is s and inst is not None and fp in st.live:
                inst.last_active = now  # the same finding as before: nothing else to do
                continue
            stepped.add(fp)
            st.live[fp] = key
            if s.secondary:
                self._secondary.add(fp)
            if inst is None:
                inst = Instance(fp, rid, s.labelset, s.annotations, "pending", now, now)
                state_before: tuple[Any, ...] = ()
            else:
                state_before = (inst.state, inst.active_at)
                # Annotations `depends_on` wrote stay until it next looks: it only looks when a state moved.
                inst.annotations = _keep_dependency_annotations(s.annotations, inst.annotations)
            new_inst = step(inst, True, now, rule.for_, rule.keep_firing_for)
            assert new_inst is not None
            if new_inst.state == "pending":
                st.ticking.add(fp)
            else:
                st.ticking.discard(fp)
            self._store(rid, fp, new_inst, significant=(new_inst.state, new_inst.active_at) != state_before)
        for fp in before:
            if st.live.get(fp) == key:
                del st.live[fp]
                st.ticking.add(fp)

    def _tick_timers(
        self,
        rid: str,
        rule: RuleBase,
        st: RuleState,
        ev: Evaluation,
        now: datetime,
        only: set[PipelineKey] | None,
        stepped: set[str],
    ) -> None:
        """Instances whose lifecycle moves with time alone: pending ones wait out `for`, inactive ones
        resolve (after `keep_firing_for`) and are forgotten (after the retention)."""
        insts = self.instances[rid]
        settled = ev.settled
        for fp in list(st.ticking):
            if fp in stepped:
                continue
            inst = insts.get(fp)
            if inst is None:
                st.ticking.discard(fp)
                continue
            if only is not None and _key_of(inst.labels) not in only:
                continue
            before = (inst.state, inst.resolved_at)
            if fp in st.live:
                new = step(inst, True, now, rule.for_, rule.keep_firing_for)
                assert new is not None
                if new.state != "pending":
                    st.ticking.discard(fp)
                if (new.state, new.resolved_at) != before:
                    self._store(rid, fp, new)
                continue
            if inst.state != "resolved" and not settled(dict(inst.labels)):
                continue  # the condition could not judge it: hold it as it is
            new = step(inst, False, now, rule.for_, rule.keep_firing_for)
            if new is None:
                st.ticking.discard(fp)
                self._store(rid, fp, None)
            elif (new.state, new.resolved_at) != before:
                self._store(rid, fp, new)

    # -- source rules: few findings, judged in full every tick ------------------------------------------
    def _apply(
        self,
        rid: str,
        group: RuleGroup,
        rule: RuleBase,
        ev: Evaluation,
        now: datetime,
        rendered: RenderCache,
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
                rendered[identity] = Shown(identity, f.variables, ls, fp, annotations)
            seen.add(fp)
            current.add(identity)
            inst = insts.get(fp)
            before: tuple[Any, ...] = ()
            if inst is None:
                inst = Instance(fp, rid, ls, annotations, "pending", now, now)
            else:
                before = (inst.state, inst.active_at)
                inst.annotations = _keep_dependency_annotations(annotations, inst.annotations)
            new = step(inst, True, now, rule.for_, rule.keep_firing_for)
            self._store(rid, fp, new, significant=new is None or (new.state, new.active_at) != before)
        # A full evaluation sees every finding of the rule: what it did not find is gone, and so is its text.
        for identity in [k for k in rendered if k not in current]:
            del rendered[identity]
        for fp, inst in list(insts.items()):
            if fp in seen:
                continue
            if not ev.settled(dict(inst.labels)):
                continue
            before = (inst.state, inst.resolved_at)
            new = step(inst, False, now, rule.for_, rule.keep_firing_for)
            if new is None or (new.state, new.resolved_at) != before:
                self._store(rid, fp, new)

    def _store(self, rid: str, fp: str, inst: Instance | None, significant: bool = True) -> None:
        """Keep an instance's new state. `significant`: its state moved (not just its `last_active` or
        text), so it is persisted and `depends_on` looks again."""
        insts = self.instances.setdefault(rid, {})
        if inst is None:
            old = insts.pop(fp, None)
            self.forgotten.add(fp)
            self.dirty.discard(fp)
            self._secondary.discard(fp)
            if old is not None:
                self._moved[(rid, fp)] = _key_of(old.labels)
            return
        insts[fp] = inst
        if significant:
            self.dirty.add(fp)
            self._moved[(rid, fp)] = _key_of(inst.labels)


def _key_of(labels: LabelSet) -> PipelineKey:
    source = pipeline = ""
    for k, v in labels:
        if k == "source":
            source = v
        elif k == "pipeline":
            pipeline = v
    return PipelineKey(source, pipeline)


def _keep_dependency_annotations(rendered: LabelSet, current: LabelSet) -> LabelSet:
    # `depends_on` adds root_cause/blocks after evaluation; a re-rendered text must not drop them
    # between two of its looks (it looks only when an instance's state moves).
    extra = [(k, v) for k, v in current if k in DEPENDENCY_ANNOTATIONS]
    if not extra:
        return rendered
    return tuple(sorted([(k, v) for k, v in rendered if k not in DEPENDENCY_ANNOTATIONS] + extra))


def _annotations_of(rule: RuleBase, finding: Finding) -> Mapping[str, str]:
    return finding.annotations if finding.annotations is not None else rule.annotations


_ZERO = timedelta(0)
