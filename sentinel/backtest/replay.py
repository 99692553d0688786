"""Run one rule set over fetched history on a simulated clock: alerts fired and notifications sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sentinel.alerting.alert import LabelSet
from sentinel.backtest.fetch import SourceHistory
from sentinel.calendars import Calendars
from sentinel.clock import FrozenClock
from sentinel.config import Config
from sentinel.replay.facts import timeline
from sentinel.replay.loop import Fired, Replay
from sentinel.replay.notifier import ReplayNotifier
from sentinel.replay.record import Notification
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules

MAX_RUNS_PER_PIPELINE = 100  # as the daemon keeps


@dataclass
class Outcome:
    start: datetime
    end: datetime
    fired: list[Fired]
    notifications: list[Notification]
    closed: list[tuple[datetime, str, LabelSet]]  # (at, receiver, group) of groups that drained
    evaluations: int
    runs: int


async def replay(
    config: Config,
    rules: LoadedRules,
    histories: Mapping[str, SourceHistory],
    start: datetime,
    end: datetime,
) -> Outcome:
    clock = FrozenClock(start)
    engine = RuleEngine(rules, {s.name: dict(s.labels) for s in config.sources})
    engine.extras["calendars"] = Calendars(config.calendars)
    notifier = ReplayNotifier.of(config, clock)
    polls = {s.name: s.poll_interval for s in config.sources}
    loop = Replay(
        engine,
        notifier,
        clock,
        evaluation_interval=config.evaluation_interval,
        poll_intervals=polls,
        max_runs=MAX_RUNS_PER_PIPELINE,
    )
    runs = [r for h in histories.values() for r in h.runs.values()]
    tasks = [t for h in histories.values() for t in h.tasks.values()]
    # Pipeline metadata is today's; its `next_run` says nothing about the past, so it is left out.
    infos = {
        name: [i.model_copy(update={"next_run": None}) for i in h.pipelines.values()] for name, h in histories.items()
    }
    await loop.run(timeline(runs, tasks), start, end, infos)
    return Outcome(start, end, loop.fired, notifier.sent, notifier.closed, loop.evaluations, len(runs))
