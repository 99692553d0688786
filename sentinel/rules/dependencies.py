"""`depends_on`: explain — and by default hold back — lateness that an upstream pipeline caused.

When market data fails, risk and reporting miss their deadlines too; on-call needs one page (the failure)
with the consequences attached, not three. After every evaluation the engine asks `resolve` what each
pending or firing instance's dependency view is:

- A *cause* is a firing alert of kind failed, failure_rate, deadline, late_start, freshness or stuck
  (decided by the rule's `when`, never by its name).
- An *effect* is a pending or firing alert of kind deadline, late_start or freshness on a pipeline whose
  upstreams (the rule's or group's `depends_on`, plus `PipelineInfo.upstreams` from Airflow assets)
  include a pipeline with a firing cause. Its *roots* are followed transitively: an upstream alert that
  is itself an effect contributes its own roots, so A → B → C blames A when B is only late because of A.
- A pipeline's own earlier-stage alert explains its own later-stage one, in the order
  failed/failure_rate/stuck → late_start → deadline → freshness: a deadline missed because the run
  failed is the failure's incident, not a second page. The order keeps this acyclic.
- An effect gets a `root_cause` annotation and, unless `inhibited_by_upstream: false`, `inhibited_by`
  (the roots' fingerprints); the engine does not hand inhibited instances to the dispatcher.
- Every firing cause gets a `blocks` annotation: the pipelines downstream of it (transitively), known
  from configuration and assets, so the very first page already says what is at risk.

An alert the dispatcher already has (firing, not inhibited, fired before this evaluation) is never
inhibited afterwards: the dispatcher would keep the stale firing copy forever, and a fake "resolved"
would be a lie. It gets `root_cause` only. Conversely a resolution is only handed on for an episode that
was handed on while firing (`inhibited_by` empty), so a never-sent alert never "resolves" in a message.

`resolve` is a function of the instances, the rules and the history (plus `AssetIndex`, a cache the
caller owns); it changes nothing, and the engine applies the verdicts.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sentinel.alerting.alert import LabelSet, labelset
from sentinel.model import PipelineKey
from sentinel.observe.history import History
from sentinel.rules.base import DEPENDENCY_ANNOTATIONS, DEPENDENT_KINDS, PipelineSelector, UpstreamRef
from sentinel.rules.files import LoadedRules
from sentinel.rules.lifecycle import Instance

__all__ = [
    "CAUSE_KINDS",
    "EFFECT_KINDS",
    "MAX_BLOCKS",
    "STAGE",
    "AssetIndex",
    "RuleDeps",
    "Verdict",
    "delivered",
    "dependents",
    "resolve",
    "rule_index",
]

# An upstream that failed or is itself late explains downstream lateness.
CAUSE_KINDS = frozenset({"failed", "failure_rate", "deadline", "late_start", "freshness", "stuck"})
# Only "nothing arrived in time" is explained away; a downstream failure is its own problem and pages.
EFFECT_KINDS = DEPENDENT_KINDS
# The stage of an alert within one pipeline: an alert is explained by the pipeline's own firing alerts of
# an earlier stage (a failed run is why the deadline is missed, which is why the data goes stale).
STAGE = {"failed": 0, "failure_rate": 0, "stuck": 0, "late_start": 1, "deadline": 2, "freshness": 3}
# A shared upstream can feed hundreds of pipelines; a page lists a few and counts the rest.
MAX_BLOCKS = 10

_LIVE = ("pending", "firing")


@dataclass(frozen=True)
class RuleDeps:
    """What `resolve` needs of one rule: its kind, its effective upstreams and selection."""

    kind: str
    upstreams: tuple[UpstreamRef, ...]
    inhibit: bool
    selector: PipelineSelector


@dataclass(frozen=True)
class Verdict:
    annotations: LabelSet
    inhibited_by: tuple[str, ...]


def rule_index(rules: LoadedRules) -> dict[str, RuleDeps]:
    """Rule id ("group/alert") -> its dependency settings; a rule's own settings replace its group's."""
    out: dict[str, RuleDeps] = {}
    for _, group in rules.groups():
        for rule in group.rules:
            ups = rule.depends_on if rule.depends_on is not None else group.depends_on
            inhibit = rule.inhibited_by_upstream
            out[f"{group.name}/{rule.alert}"] = RuleDeps(
                kind=rule.when,
                upstreams=tuple(ups) if rule.when in EFFECT_KINDS else (),
                inhibit=group.inhibited_by_upstream if inhibit is None else inhibit,
                selector=rule.pipelines or group.pipelines,
            )
    return out


def delivered(inst: Instance, now: datetime) -> bool:
    """Whether the dispatcher already has this firing episode: it fired at an earlier evaluation and was
    not inhibited then (a verdict of an earlier evaluation is what `inhibited_by` still holds)."""
    return inst.state == "firing" and not inst.inhibited_by and inst.fired_at is not None and inst.fired_at < now


def resolve(
    instances: Iterable[Instance],
    rules: Mapping[str, RuleDeps],
    history: History,
    now: datetime,
    assets: AssetIndex | None = None,
    moved: Mapping[tuple[str, str], PipelineKey] | None = None,
) -> dict[tuple[str, str], Verdict]:
    """(rule id, fingerprint) -> new annotations and inhibited_by, for every pending or firing instance
    whose dependency view changed. Resolved instances keep the view they resolved with.

    `assets` lets a caller keep the reverse asset index between evaluations (see `AssetIndex`).
    `moved`, when given, names the instances ((rule id, fingerprint) -> pipeline, forgotten ones too) whose
    state moved since the previous call, whose verdicts the caller applied, with the rules and pipeline
    metadata unchanged: then only those, and effects on or downstream of a moved cause's pipeline, are
    judged — nothing else's view can have changed. A tick at 10,000 pipelines moves a handful."""
    live = [i for i in instances if i.state in _LIVE and i.rule in rules]
    causes = [i for i in live if i.state == "firing" and rules[i.rule].kind in CAUSE_KINDS]
    graph = _Graph(rules, history, causes, assets or AssetIndex())
    if moved is not None:
        touched = {k for (rid, _), k in moved.items() if rid in rules and rules[rid].kind in CAUSE_KINDS}
        for k in list(touched):
            touched.update(graph.downstream_of(k, now))
        live = [
            i
            for i in live
            if (i.rule, i.fingerprint) in moved or (rules[i.rule].kind in EFFECT_KINDS and graph.key(i) in touched)
        ]
    if not causes:
        # The common tick: nothing upstream is wrong. Only clear what an earlier evaluation wrote.
        return {
            (i.rule, i.fingerprint): Verdict(_strip(i.annotations), ())
            for i in live
            if i.inhibited_by or _has_dependency_annotations(i.annotations)
        }

    out: dict[tuple[str, str], Verdict] = {}
    for inst in live:
        kind = rules[inst.rule].kind
        extra: dict[str, str] = {}
        inhibited_by: tuple[str, ...] = ()
        if kind in EFFECT_KINDS:
            roots = graph.roots(inst)
            if roots:
                own = graph.key(inst)
                extra["root_cause"] = "; ".join(_describe(r, graph.key(r), own) for r in roots)
                if rules[inst.rule].inhibit and not delivered(inst, now):
                    inhibited_by = tuple(sorted({r.fingerprint for r in roots}))
        if inst.state == "firing" and kind in CAUSE_KINDS:
            blocked = graph.downstream_of(graph.key(inst), now)
            if blocked:
                extra["blocks"] = _listing(blocked)
        if not extra and not inhibited_by and not inst.inhibited_by:
            if not _has_dependency_annotations(inst.annotations):
                continue  # the common case: untouched before and now, so skip rebuilding annotations
        annotations = labelset({**dict(_strip(inst.annotations)), **extra})
        if annotations != inst.annotations or inhibited_by != inst.inhibited_by:
            out[(inst.rule, inst.fingerprint)] = Verdict(annotations, inhibited_by)
    return out


def dependents(
    upstream: PipelineKey, rules: Mapping[str, RuleDeps], history: History, now: datetime
) -> list[PipelineKey]:
    """Pipelines downstream of `upstream`, transitively, from `depends_on` and Airflow assets."""
    return _Graph(rules, history, [], AssetIndex()).downstream_of(upstream, now)


class AssetIndex:
    """Asset upstream name -> the pipelines that wait for it: the reverse of `PipelineInfo.upstreams`.

    Building it reads every pipeline's metadata, too much for every tick at 10,000 pipelines while some
    failure is always firing. DAG metadata is polled on a slow cadence and only feeds the `blocks`
    listing (an alert's own upstreams are read live), so it is rebuilt when the set of pipelines grows
    or shrinks and otherwise at most every `max_age` of evaluation time.
    """

    def __init__(self, max_age: timedelta = timedelta(minutes=5)) -> None:
        self.max_age = max_age
        self._index: dict[str, list[PipelineKey]] = {}
        self._built: tuple[int, int, datetime] | None = None  # (history id, pipeline count, when)

    def get(self, history: History, now: datetime) -> dict[str, list[PipelineKey]]:
        b = self._built
        if b is None or b[0] != id(history) or b[1] != len(history.pipelines) or not b[2] <= now < b[2] + self.max_age:
            index: dict[str, list[PipelineKey]] = {}
            for key, ph in history.pipelines.items():
                info = ph.info
                if info is not None and info.upstreams:
                    for name in info.upstreams:
                        index.setdefault(name, []).append(key)
            self._index, self._built = index, (id(history), len(history.pipelines), now)
        return self._index


class _Graph:
    """The dependency view of one evaluation. Built lazily: most evaluations with a firing cause only
    ask about the few pipelines that have alerts."""

    def __init__(
        self, rules: Mapping[str, RuleDeps], history: History, causes: list[Instance], assets: AssetIndex
    ) -> None:
        self.rules = rules
        self.history = history
        self.causes = causes
        self.assets = assets
        self._keys: dict[int, PipelineKey] = {}
        self._by_key: dict[PipelineKey, list[Instance]] = {}
        for c in causes:
            self._by_key.setdefault(self.key(c), []).append(c)
        self._roots: dict[tuple[str, str], tuple[Instance, ...]] = {}
        self._selected: dict[str, list[PipelineKey]] = {}
        self._down: dict[PipelineKey, list[PipelineKey]] = {}

    def key(self, inst: Instance) -> PipelineKey:
        k = self._keys.get(id(inst))
        if k is None:
            k = self._keys[id(inst)] = _key(inst)
        return k

    # -- upstream side: why is this alert firing? ----------------------------------------------------
    def upstreams(self, inst: Instance, key: PipelineKey) -> list[UpstreamRef]:
        refs = list(self.rules[inst.rule].upstreams)
        ph = self.history.pipelines.get(key)
        info = ph.info if ph is not None else None
        if info is not None and info.upstreams:
            # Asset names are exact pipeline names; escape so a '[' in a name is not a glob.
            refs.extend(UpstreamRef(pipeline=glob.escape(name)) for name in info.upstreams)
        return refs

    def direct_causes(self, inst: Instance) -> list[Instance]:
        own = self.key(inst)
        stage = STAGE[self.rules[inst.rule].kind]
        found = [c for c in self._by_key.get(own, ()) if STAGE[self.rules[c.rule].kind] < stage]
        refs = self.upstreams(inst, own)
        if refs:
            for key, cs in self._by_key.items():
                if key != own and any(r.matches(key) for r in refs):
                    found.extend(cs)
        return found

    def roots(self, inst: Instance, stack: frozenset[tuple[str, str]] = frozenset()) -> tuple[Instance, ...]:
        """The alerts that ultimately explain `inst`; empty when nothing upstream does."""
        ident = (inst.rule, inst.fingerprint)
        if ident in self._roots:
            return self._roots[ident]
        found: dict[tuple[str, str], Instance] = {}
        for cause in self.direct_causes(inst):
            cid = (cause.rule, cause.fingerprint)
            deeper: tuple[Instance, ...] = ()
            # A late upstream may be late because of its own upstream; a failure is a root by itself.
            # A cycle in the configuration stops at the alert that closes it.
            if self.rules[cause.rule].kind in EFFECT_KINDS and cid not in stack and cid != ident:
                deeper = self.roots(cause, stack | {ident})
            for r in deeper or (cause,):
                if (r.rule, r.fingerprint) != ident:
                    found[(r.rule, r.fingerprint)] = r
        result = tuple(sorted(found.values(), key=_sort_key))
        self._roots[ident] = result
        return result

    # -- downstream side: what does this upstream hold up? -------------------------------------------
    def downstream_of(self, upstream: PipelineKey, now: datetime) -> list[PipelineKey]:
        if upstream in self._down:
            return self._down[upstream]
        seen: set[PipelineKey] = {upstream}
        queue = [upstream]
        while queue:
            current = queue.pop()
            for d in self._direct_dependents(current, now):
                if d not in seen:
                    seen.add(d)
                    queue.append(d)
        seen.discard(upstream)
        result = sorted(seen)
        self._down[upstream] = result
        return result

    def _direct_dependents(self, key: PipelineKey, now: datetime) -> set[PipelineKey]:
        found = set(self.assets.get(self.history, now).get(key.pipeline, ()))
        for rid, deps in self.rules.items():
            if deps.upstreams and any(r.matches(key) for r in deps.upstreams):
                found.update(self._selected_by(rid, deps.selector))
        found.discard(key)
        return found

    def _selected_by(self, rid: str, selector: PipelineSelector) -> list[PipelineKey]:
        if rid not in self._selected:
            self._selected[rid] = [k for k, ph in self.history.pipelines.items() if selector.matches(k, ph.info)]
        return self._selected[rid]


def _key(inst: Instance) -> PipelineKey:
    # Every evaluation asks for the key of every firing cause; an instance's labels never change, so the
    # answer is kept per labels object (checked by identity, bounded by clearing).
    labels = inst.labels
    hit = _KEYS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    # Labels are a short sorted tuple; a scan beats building a dict for two lookups on this hot path.
    source = pipeline = ""
    for k, v in labels:
        if k == "pipeline":
            pipeline = v
        elif k == "source":
            source = v
    key = PipelineKey(source, pipeline)
    if len(_KEYS) > 100_000:
        _KEYS.clear()
    _KEYS[id(labels)] = (labels, key)
    return key


_KEYS: dict[int, tuple[LabelSet, PipelineKey]] = {}


def _sort_key(inst: Instance) -> tuple[str, str, str]:
    labels = dict(inst.labels)
    return labels.get("pipeline", ""), labels.get("alertname", ""), inst.fingerprint


def _describe(root: Instance, root_key: PipelineKey, effect: PipelineKey) -> str:
    labels = dict(root.labels)
    where = "" if root_key == effect else "upstream "
    text = f"{where}{labels.get('pipeline', '')} {labels.get('alertname', '')}"
    return f"{text} (task {labels['task']})" if "task" in labels else text


def _listing(keys: list[PipelineKey]) -> str:
    names = sorted({k.pipeline for k in keys})
    shown = ", ".join(names[:MAX_BLOCKS])
    return shown if len(names) <= MAX_BLOCKS else f"{shown} and {len(names) - MAX_BLOCKS} more"


def _has_dependency_annotations(annotations: LabelSet) -> bool:
    return any(k in DEPENDENCY_ANNOTATIONS for k, _ in annotations)


def _strip(annotations: LabelSet) -> LabelSet:
    return tuple((k, v) for k, v in annotations if k not in DEPENDENCY_ANNOTATIONS)
