"""SLA outcomes of `deadline` rules: exactly one verdict, met or missed, per pipeline per period.

The period logic is the deadline condition's own (`due_period`, `_satisfied`), so the SLA series and the
alert can never disagree about a day: periods are the calendar's session dates (a holiday has none, an
early close moves a `close + 45m` deadline), and a run counts for the period it is *for* (its
`scheduled_for`), so a backfill for an old date does not meet today's deadline.

A period is recorded
- `met` as soon as a successful run for it has ended, before its deadline (so the series moves when the
  data lands, not at the deadline), or when its deadline is judged and such a run ended by the deadline;
- `missed` when its deadline passes without one. A success arriving later does not change the verdict.

The last recorded period per rule and pipeline is saved in the store, so a restart never records a period
twice. Like the alert, only the most recent due period is judged: periods that passed entirely while
Sentinel was down are not back-filled. Paused pipelines get no verdict. The first time a rule sees a
pipeline, the period already due is recorded only if it was met: the run that met it may be older than the
history Sentinel read on its first poll, so a miss is recorded only for a deadline that passes while
Sentinel watches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import Metric

from sentinel.calendars import Calendar, lookup
from sentinel.clock import Clock
from sentinel.exposition import CounterFamily, GaugeSpec, escape, fmt, label_text, pieces
from sentinel.kpi.days import DayTally, day_number, ratios
from sentinel.metrics import Metrics
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules.base import PipelineSelector, is_paused
from sentinel.rules.conditions.deadline import DeadlineRule, _satisfied, due_period
from sentinel.rules.files import LoadedRules

NAMESPACE = "kpi.sla"
SlaKey = tuple[str, str, str]  # (rule, source, pipeline)
_LABELS = ("source", "pipeline", "rule")
_COMPLIANCE = GaugeSpec(
    "sentinel_sla_compliance_ratio",
    "Met / judged periods of a deadline rule over the periods dated in the last N days, today "
    "included. Absent when no period in the window was judged.",
    (*_LABELS, "window"),
)


@dataclass(slots=True)
class SlaRecord:
    last: int = 0  # ordinal of the newest period with a verdict
    met: int = 0
    missed: int = 0
    days: DayTally = field(default_factory=DayTally)  # (met, missed) by period date

    def dump(self) -> dict[str, Any]:
        return {"last": self.last, "met": self.met, "missed": self.missed, "days": self.days.dump()}

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> SlaRecord:
        return cls(int(d.get("last", 0)), int(d.get("met", 0)), int(d.get("missed", 0)), DayTally.load(d.get("days")))


def key_of(k: SlaKey) -> str:
    return "\t".join(k)


class SlaKpis:
    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self.clock = clock
        self.met = CounterFamily(
            "sentinel_sla_met_total",
            "Periods whose deadline rule was met: a successful run for the period ended by the deadline.",
            _LABELS,
        )
        self.missed = CounterFamily(
            "sentinel_sla_missed_total",
            "Periods whose deadline passed without a successful run for the period.",
            _LABELS,
        )
        metrics.registry.register(self.met)
        metrics.registry.register(self.missed)
        self._labels: dict[SlaKey, str] = {}  # escaped label text, made once per (rule, pipeline)
        self.records: dict[SlaKey, SlaRecord] = {}
        self.dirty: set[SlaKey] = set()
        # id(selector) -> (pipelines in the history when selected, selection): globs read keys only and
        # the history never drops a pipeline, so a selection holds until a pipeline is added.
        self._selections: dict[int, tuple[int, list[PipelineHistory]]] = {}
        # rule -> ((due period, upcoming period), pipeline -> history version last looked at). Keyed by the
        # history object (hashed by identity) rather than its key tuple, whose hash is computed every time.
        self._seen: dict[str, tuple[tuple[int, int | None], dict[PipelineHistory, int]]] = {}
        metrics.registry.register(self)

    # -- judging -----------------------------------------------------------------------------------
    def evaluate(self, rules: LoadedRules, history: History, extras: Mapping[str, Any], now: datetime) -> None:
        """Record every verdict that became known by `now`. Call on each full evaluation."""
        for _, group in rules.groups():
            for rule in group.rules:
                if isinstance(rule, DeadlineRule):
                    pipelines = self._select(rule.pipelines or group.pipelines, history)
                    self._judge(rule, group.calendar, pipelines, extras, now)

    def _judge(
        self,
        rule: DeadlineRule,
        group_calendar: str | None,
        pipelines: list[PipelineHistory],
        extras: Mapping[str, Any],
        now: datetime,
    ) -> None:
        rule_tz = ZoneInfo(rule.timezone) if rule.timezone else None
        try:
            cal = lookup(extras, rule.calendar or group_calendar, rule_tz)
        except KeyError:
            return  # the alert cannot judge an unknown calendar either
        tz = rule_tz or cal.tz
        due = due_period(cal, rule.deadline, tz, now)
        if due is None:
            return
        session, deadline_at = due
        due_day = session.day.toordinal()
        due_span = _span(cal, session.day)
        upcoming = cal.next_session(session.day)
        up_day = upcoming.day.toordinal() if upcoming is not None else None
        up_span = _span(cal, upcoming.day) if upcoming is not None else None
        # A pipeline looked at in this same pair of periods, its history unchanged since, has nothing new to
        # say: skipping it keeps a tick over 10,000 pipelines to a dict lookup each.
        epoch = (due_day, up_day)
        seen_epoch, seen = self._seen.get(rule.alert, (None, {}))
        if seen_epoch != epoch:
            seen = {}
            self._seen[rule.alert] = (epoch, seen)
        for ph in pipelines:
            if seen.get(ph) == ph.version:
                continue
            seen[ph] = ph.version
            if is_paused(ph):
                continue
            key = (rule.alert, ph.key.source, ph.key.pipeline)
            rec = self.records.get(key)
            last = rec.last if rec is not None else 0
            if last < due_day:
                met = _satisfied(ph, *due_span, deadline_at)
                if rec is None and not met:
                    # First sight of this pipeline under this rule: its success may predate the history we
                    # hold (the first poll reads a day back), so only a deadline passing while we watch
                    # can be missed.
                    self.records[key] = SlaRecord(last=due_day)
                    self.dirty.add(key)
                else:
                    self._record(key, due_day, met)
                last = due_day
            if up_day is not None and up_span is not None and last < up_day and _satisfied(ph, *up_span, now):
                self._record(key, up_day, True)

    def _record(self, key: SlaKey, day: int, met: bool) -> None:
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = SlaRecord()
        rec.last = day
        rec.days.add(day, good=met)
        _, source, pipeline = key
        if met:
            rec.met += 1
            self.met.labels(source, pipeline, key[0]).inc()
        else:
            rec.missed += 1
            self.missed.labels(source, pipeline, key[0]).inc()
        self.dirty.add(key)

    def _select(self, selector: PipelineSelector, history: History) -> list[PipelineHistory]:
        if selector.tags:
            return [ph for key, ph in history.pipelines.items() if selector.matches(key, ph.info)]
        entry = self._selections.get(id(selector))
        if entry is None or entry[0] != len(history.pipelines):
            picked = [ph for key, ph in history.pipelines.items() if selector.matches(key, ph.info)]
            entry = self._selections[id(selector)] = (len(history.pipelines), picked)
        return entry[1]

    def forget_selections(self) -> None:
        """After a rule reload: selectors are new objects (old ids may be reused), and a rule may be new."""
        self._selections.clear()
        self._seen.clear()

    # -- persistence -------------------------------------------------------------------------------
    def restore(self, saved: Mapping[str, Any]) -> None:
        for k, d in saved.items():
            parts = k.split("\t")
            if len(parts) != 3:
                continue
            key: SlaKey = (parts[0], parts[1], parts[2])
            rec = self.records[key] = SlaRecord.load(d)
            if rec.met:
                self.met.labels(parts[1], parts[2], parts[0]).inc(rec.met)
            if rec.missed:
                self.missed.labels(parts[1], parts[2], parts[0]).inc(rec.missed)

    def take_changes(self) -> dict[str, Any]:
        changed = {key_of(k): self.records[k].dump() for k in self.dirty if k in self.records}
        self.dirty.clear()
        return changed

    # -- scrape (render thread) ----------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        yield _COMPLIANCE.family()

    def collect(self) -> Iterator[Metric]:
        fam = _COMPLIANCE.family()
        for (rule, source, pipeline), window, value in self._values():
            fam.add_metric([source, pipeline, rule, window], value)
        yield fam

    def exposition(self) -> Iterator[str]:
        yield _COMPLIANCE.header
        yield from pieces(self._lines())

    def _lines(self) -> Iterator[str]:
        texts, prefix = self._labels, _COMPLIANCE.prefix
        for key, window, value in self._values():
            labels = texts.get(key)
            if labels is None:
                rule, source, pipeline = key
                labels = texts[key] = label_text(_LABELS, (source, pipeline, rule))
            yield f'{prefix}{labels},window="{escape(window)}"}} {fmt(value)}\n'

    def _values(self) -> Iterator[tuple[SlaKey, str, float]]:
        today = day_number(self.clock.now())
        for key, rec in list(self.records.items()):
            for window, value in ratios(rec.days, today):
                yield key, window, value


def _span(cal: Calendar, day: Any) -> tuple[datetime, datetime]:
    """A period date as the instant range the deadline condition compares `scheduled_for` with."""
    return cal.start_of(day), cal.start_of(day + timedelta(days=1))
