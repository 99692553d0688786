"""The daemon's evaluation loop on a simulated clock, over a recorded timeline of facts.

Like the daemon: every source is polled every `poll_interval` (a fact becomes visible at the first poll at
or after it happened), rules are evaluated for the pipelines whose runs just finished, and all rules every
`evaluation_interval`; whatever the engine returns goes to the dispatcher, whose groups flush at their own
instants in between. Nothing sleeps: the clock jumps from one instant that matters to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sentinel.alerting.alert import Alert, LabelSet
from sentinel.clock import FrozenClock
from sentinel.model import PipelineInfo, PipelineKey, PollResult, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.replay.facts import Fact, copy_model
from sentinel.replay.idle import needs_full_tick
from sentinel.replay.notifier import ReplayNotifier
from sentinel.rules.engine import RuleEngine

_JUST_BEFORE = timedelta(microseconds=1)
_DEFAULT_POLL = timedelta(seconds=15)
_Polls = dict[str, tuple[list[RunUpdate], list[TaskUpdate]]]  # source -> (runs, tasks) of one poll instant


@dataclass(frozen=True)
class Fired:
    """An alert that started firing: one per (fingerprint, activation)."""

    at: datetime
    alertname: str
    labels: LabelSet
    fingerprint: str


class Replay:
    def __init__(
        self,
        engine: RuleEngine,
        notifier: ReplayNotifier,
        clock: FrozenClock,
        *,
        evaluation_interval: timedelta,
        poll_intervals: Mapping[str, timedelta],
        max_runs: int = 100,
        skip_idle_ticks: bool = True,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.clock = clock
        self.evaluation_interval = evaluation_interval
        self.poll_intervals = dict(poll_intervals)
        self.history = History(max_runs)
        self.fired: list[Fired] = []
        self.skip_idle_ticks = skip_idle_ticks
        self.evaluations = 0
        self.full_ticks = 0
        self._active: dict[str, datetime | None] = {}
        self._last_put: list[Alert] = []

    async def run(
        self,
        facts: Sequence[Fact],
        start: datetime,
        end: datetime,
        infos: Mapping[str, Sequence[PipelineInfo]] | None = None,
        progress: Callable[[datetime], None] | None = None,
    ) -> None:
        self.clock.set(start)
        deliveries = self._deliveries(facts, start)
        times = sorted(deliveries)
        for source in sorted(set(self.poll_intervals) | set(infos or {})):
            pipelines = tuple((infos or {}).get(source, ()))
            self.history.apply(PollResult(source=source, health=_up(source, start), pipelines=pipelines))
        next_tick = start
        first = True
        unjudged: set[PipelineKey] = set()  # pipelines changed since the last tick
        i = 0
        while True:
            next_delivery = times[i] if i < len(times) else None
            t = next_tick if next_delivery is None else min(next_tick, next_delivery)
            if t > end:
                break
            await self.notifier.advance_to(t - _JUST_BEFORE)
            self.clock.set(t)
            full, only = False, set[PipelineKey]()
            if next_delivery == t:
                full, only = self._deliver(deliveries.pop(t), t, unjudged)
                i += 1
            if next_tick == t:
                next_tick += self.evaluation_interval
                if first or full or not self.skip_idle_ticks or needs_full_tick(self.engine, t):
                    full, first = True, False
                else:
                    only |= unjudged  # the tick would judge just these: see sentinel.replay.idle
                unjudged = set()
            if full:
                self.full_ticks += 1
            if full or only:
                self._put(self.engine.evaluate(self.history, t, None if full else only), t)
            await self.notifier.advance_to(t)
            if progress is not None:
                progress(t)
        await self.notifier.advance_to(end)

    def _deliveries(self, facts: Sequence[Fact], start: datetime) -> dict[datetime, _Polls]:
        """What each poll instant delivers, per source: its runs and its tasks, each in timeline order."""
        out: dict[datetime, _Polls] = {}
        for f in facts:
            poll = self.poll_intervals.get(f.source, _DEFAULT_POLL)
            # Visible at the first poll at or after the change (polls at start, start + poll, ...).
            k = max(0, -((start - f.at) // poll)) if f.at > start else 0
            at = start + k * poll
            polls = out.get(at)
            if polls is None:
                polls = out[at] = {}
            batch = polls.get(f.source)
            if batch is None:
                batch = polls[f.source] = ([], [])
            if isinstance(f.item, RunUpdate):
                batch[0].append(f.item)
            elif isinstance(f.item, TaskUpdate):
                batch[1].append(f.item)
        return out

    def _deliver(self, polls: _Polls, t: datetime, unjudged: set[PipelineKey]) -> tuple[bool, set[PipelineKey]]:
        full, only = False, set()
        for source, (runs, tasks) in sorted(polls.items()):
            changes = self.history.apply(_poll(source, t, tuple(runs), tuple(tasks)))
            full = full or changes.health_changed
            only.update(r.key for r in changes.finished)
            unjudged.update(r.key for r in changes.runs)
            unjudged.update(x.key for x in changes.tasks)
        return full, only

    def _put(self, alerts: list[Alert], t: datetime) -> None:
        self.evaluations += 1
        for a in alerts:
            if a.ends_at is None and self._active.get(a.fingerprint) != a.starts_at:
                self._active[a.fingerprint] = a.starts_at
                self.fired.append(Fired(t, a.name, a.labels, a.fingerprint))
        # The same alerts again change no group (a drained group's resolutions are not re-admitted): skip it.
        if alerts != self._last_put:
            self.notifier.put(alerts)
            self._last_put = alerts


def _up(source: str, t: datetime) -> SourceHealth:
    return SourceHealth(source=source, reachable=True, observed_at=t)


def _poll(source: str, t: datetime, runs: tuple[RunUpdate, ...], tasks: tuple[TaskUpdate, ...]) -> PollResult:
    """A reachable source's poll at `t`, built without validation when its parts need none.

    A replay builds one per source per poll instant: validating them again (the runs and tasks came
    from validated models; `t` is already UTC) was a tenth of a long replay's time outside the engine.
    """
    if t.tzinfo is not UTC:
        return PollResult(source=source, health=_up(source, t), runs=runs, tasks=tasks)
    template = _TEMPLATES.get(source)
    if template is None:
        # `model_construct` fills every default on each call; a copy of one built per source does not.
        health = SourceHealth.model_construct(source=source, reachable=True, observed_at=t)
        template = _TEMPLATES[source] = PollResult.model_construct(source=source, health=health, runs=(), tasks=())
    health = copy_model(template.health, {"observed_at": t})
    result = copy_model(template, {"health": health, "runs": runs, "tasks": tasks})
    result.__dict__["cursor"] = {}  # its own, as `model_construct` would make it (fields set unchanged)
    return result


_TEMPLATES: dict[str, PollResult] = {}  # one per source name: bounded by the sources a replay reads
