"""`when: deadline` with `predict: true`: a warning before a deadline the running (or unstarted) run is
projected to miss, handed over to the miss alert at the deadline. A frozen clock walks each scenario
minute by minute while the run's progress is fed in as a poller would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules

DAY = datetime(2026, 11, 25, tzinfo=UTC)
START = DAY.replace(hour=17)  # the run for each day is scheduled at 17:00
DEADLINE = DAY.replace(hour=17, minute=55)
PIPE = "eod_report"
TASKS = ("extract", "transform", "validate", "load")
GAP = timedelta(seconds=30)  # scheduler gap between two sequential tasks

RULES = """\
groups:
  - name: reports
    rules:
      - alert: EodReportLate
        when: deadline
        deadline: "17:55"
        severity: critical
        predict: true
        annotations:
          summary: "{{ pipeline }} missed {{ deadline }}"
"""


def load(tmp_path: Path, text: str = RULES) -> LoadedRules:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return load_rules([p])


def facts(
    day: datetime, minutes: list[float], now: datetime, with_tasks: bool = True, delay: timedelta = timedelta(0)
) -> tuple[RunUpdate | None, list[TaskUpdate]]:
    """The run for `day` (scheduled 17:00, started `delay` later, tasks one after another taking
    `minutes`) as seen at `now`."""
    scheduled = day.replace(hour=17)
    start = scheduled + delay
    if now < start:
        return None, []
    run_id = f"scheduled__{scheduled:%Y-%m-%d}"
    tasks: list[TaskUpdate] = []
    at = start
    last_event = start
    for name, m in zip(TASKS, minutes, strict=True):
        if at > now:
            break
        end = at + timedelta(minutes=m)
        done = end <= now
        tasks.append(
            TaskUpdate(
                source="af",
                pipeline=PIPE,
                run_id=run_id,
                task=name,
                state=RunState.SUCCESS if done else RunState.RUNNING,
                started_at=at,
                ended_at=end if done else None,
                updated_at=end if done else at,
                try_number=1,
            )
        )
        last_event = end if done else at
        at = end + GAP
    finished = at - GAP
    done = len(tasks) == len(TASKS) and finished <= now
    run = RunUpdate(
        source="af",
        pipeline=PIPE,
        run_id=run_id,
        state=RunState.SUCCESS if done else RunState.RUNNING,
        scheduled_for=scheduled,
        started_at=start,
        ended_at=finished if done else None,
        updated_at=finished if done else last_event,
    )
    return run, tasks if with_tasks else []


def poll(run: RunUpdate | None, tasks: list[TaskUpdate], info: PipelineInfo | None = None) -> PollResult:
    health = SourceHealth(source="af", reachable=True, observed_at=DAY)
    return PollResult(
        source="af",
        health=health,
        runs=(run,) if run else (),
        tasks=tuple(tasks),
        pipelines_partial=(info,) if info else (),
    )


def with_history(with_tasks: bool = True) -> History:
    """Ten earlier days, each run ~10 minutes per task (9.5–10.5), done by about 17:42."""
    h = History()
    for back in range(10, 0, -1):
        day = DAY - timedelta(days=back)
        minutes = [9.5 + ((back + i) % 3) * 0.5 for i in range(len(TASKS))]
        run, tasks = facts(day, minutes, day.replace(hour=23), with_tasks)
        h.apply(poll(run, tasks))
    return h


def walk(
    tmp_path: Path, minutes: list[float] | None, with_tasks: bool = True, text: str = RULES
) -> dict[str, list[tuple[datetime, str]]]:
    """Evaluate every minute from 16:30 to 18:30, feeding today's run as it goes. Returns per alertname
    the (time, state) each time its instance changed state."""
    h, engine = with_history(with_tasks), RuleEngine(load(tmp_path, text))
    info = PipelineInfo(source="af", pipeline=PIPE, next_run=START)
    h.apply(poll(None, [], info))
    changes: dict[str, list[tuple[datetime, str]]] = {}
    last: dict[str, str] = {}
    now = DAY.replace(hour=16, minute=30)
    while now <= DAY.replace(hour=18, minute=30):
        if minutes is not None:
            run, tasks = facts(DAY, minutes, now, with_tasks)
            h.apply(poll(run, tasks))
        engine.evaluate(h, now)
        seen = {dict(i.labels)["alertname"]: i.state for i in engine.instance_list()}
        fresh = RuleEngine(engine.rules)
        fresh.evaluate(h, now)
        live = {n for n, state in seen.items() if state == "firing"}
        assert live == {dict(i.labels)["alertname"] for i in fresh.instance_list()}, now  # the cache hides nothing
        for name in set(seen) | set(last):
            state = seen.get(name, "gone")
            if state != last.get(name, "gone"):
                changes.setdefault(name, []).append((now, state))
        last = {k: v for k, v in seen.items()}
        now += timedelta(minutes=1)
    return changes


def at_risk(
    tmp_path: Path,
    minutes: list[float] | None,
    now: datetime,
    with_tasks: bool = True,
    delay: timedelta = timedelta(0),
) -> dict[str, str]:
    """The DeadlineAtRisk annotations if it fires at `now` (from a fresh engine), else {}."""
    h, engine = with_history(with_tasks), RuleEngine(load(tmp_path))
    h.apply(poll(None, [], PipelineInfo(source="af", pipeline=PIPE, next_run=START)))
    if minutes is not None:
        h.apply(poll(*facts(DAY, minutes, now, with_tasks, delay)))
    engine.evaluate(h, now)
    for inst in engine.instance_list():
        if dict(inst.labels)["alertname"] == "DeadlineAtRisk" and inst.state == "firing":
            return dict(inst.annotations)
    return {}


def test_a_run_slow_in_its_first_tasks_is_flagged_well_before_the_deadline_it_misses(tmp_path: Path) -> None:
    changes = walk(tmp_path, [25, 25, 10, 10])  # ends 18:11
    risk = changes["DeadlineAtRisk"]
    fired_at = risk[0][0]
    assert risk[0][1] == "firing" and fired_at <= DEADLINE - timedelta(minutes=15)
    # Handed over at the deadline: the warning resolves on the very tick the miss alert fires.
    assert risk[1] == (DEADLINE, "resolved")
    assert changes["EodReportLate"][0] == (DEADLINE, "firing")
    assert all(t >= DEADLINE for t, _ in changes["EodReportLate"])


def test_a_normal_run_never_raises_the_warning(tmp_path: Path) -> None:
    changes = walk(tmp_path, [10, 10, 10, 10])
    assert "DeadlineAtRisk" not in changes and "EodReportLate" not in changes


def test_the_warning_resolves_when_the_run_catches_up(tmp_path: Path) -> None:
    changes = walk(tmp_path, [24, 2, 2, 2])  # a slow first task, then the rest flies: done 17:31
    risk = changes["DeadlineAtRisk"]
    assert risk[0][1] == "firing" and risk[1][1] == "resolved"
    assert risk[1][0] < DAY.replace(hour=17, minute=31)
    assert "EodReportLate" not in changes


def test_no_run_started_and_too_little_time_left_is_at_risk(tmp_path: Path) -> None:
    # A typical run takes ~42 minutes (p90); at 16:30 there is time, at 17:20 with nothing started there is not.
    assert at_risk(tmp_path, None, DAY.replace(hour=16, minute=30)) == {}
    annotations = at_risk(tmp_path, None, DAY.replace(hour=17, minute=20))
    assert annotations["percentile"] == "p90" and annotations["deadline"] == "17:55 UTC"
    assert annotations["eta"] >= "18:00 UTC"
    assert "may miss its 17:55 UTC deadline for 2026-11-25" in annotations["summary"]


def test_whole_run_durations_stand_in_without_task_detail(tmp_path: Path) -> None:
    # No task records anywhere: the projection is the p90 run duration (~42 minutes) less the time spent.
    quick = at_risk(tmp_path, [10, 10, 10, 10], DAY.replace(hour=17, minute=21), with_tasks=False)
    assert quick == {}
    late = at_risk(
        tmp_path, [10, 10, 10, 10], DAY.replace(hour=17, minute=21), with_tasks=False, delay=timedelta(minutes=20)
    )
    assert late["eta"] >= "18:00 UTC"
