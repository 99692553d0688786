"""Cost: which rate prices a task or a run, per task-hour vs per run, month to date and the month-end
forecast, the `budget` condition, config errors with positions, and totals that survive a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.clock import FrozenClock
from sentinel.config import CostConfig, load_config
from sentinel.cost.ledger import CostLedger
from sentinel.cost.rates import RateConfig, run_price, task_hour_price
from sentinel.metrics import Metrics
from sentinel.model import RunState, RunUpdate, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules
from sentinel.yamlfile import ConfigError

RATES = [
    {"source": "af", "pool": "gpu*", "per_task_hour": 12.0},
    {"source": "pf", "work_pool": "k8s-large", "per_task_hour": 3.0, "per_run": 0.25},
    {"pipeline": "report_*", "per_run": 1.0},
    {"queue": "high_mem", "per_task_hour": 2.0},
    {"per_task_hour": 0.5},
]


def rates() -> list[RateConfig]:
    return CostConfig.model_validate({"rates": RATES}).rates


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def task(name: str, start: datetime, hours: float, **kw: object) -> TaskUpdate:
    return TaskUpdate(
        source=str(kw.pop("source", "af")),
        pipeline=str(kw.pop("pipeline", "etl")),
        run_id=str(kw.pop("run_id", "r1")),
        task=name,
        state=kw.pop("state", RunState.SUCCESS),  # type: ignore[arg-type]
        started_at=start,
        ended_at=start + timedelta(hours=hours),
        **kw,  # type: ignore[arg-type]
    )


def test_first_matching_rate_with_that_kind_of_price_wins() -> None:
    r = rates()
    assert task_hour_price(r, "af", "etl", "gpu_a100", None) == 12.0  # pool glob
    assert task_hour_price(r, "af", "etl", "default_pool", "high_mem") == 2.0  # queue
    assert task_hour_price(r, "af", "etl", "default_pool", None) == 0.5  # the catch-all
    assert task_hour_price(r, "pf", "flow/deploy", "k8s-large", None) == 3.0  # work_pool is Prefect's pool
    # report_* sets only per_run: for task hours the search goes on to the next rate that has a price
    assert task_hour_price(r, "af", "report_daily", None, None) == 0.5
    assert run_price(r, "af", "report_daily", None, None) == 1.0
    assert run_price(r, "pf", "flow/deploy", "k8s-large", None) == 0.25  # before report_*: file order
    assert run_price(r, "af", "etl", None, None) == 0.0  # no rate with per_run matches
    # A rate that names a pool never matches a task without one.
    assert task_hour_price([RateConfig(pool="gpu", per_task_hour=9)], "af", "etl", None, None) == 0.0


def ledger(now: datetime, budget: float | None = 1000.0) -> tuple[CostLedger, FrozenClock, Metrics]:
    clock, metrics = FrozenClock(now), Metrics()
    cfg = CostConfig.model_validate({"monthly_budget": budget, "rates": RATES})
    return CostLedger(cfg, metrics, clock), clock, metrics


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_per_task_hour_and_per_run_charges_and_each_task_once() -> None:
    led, _, metrics = ledger(utc(2026, 11, 10, 12))
    t0 = utc(2026, 11, 10, 8)
    assert led.task_finished(task("train", t0, 1.5, pool="gpu_a100")) == pytest.approx(18.0)
    assert led.task_finished(task("train", t0, 1.5, pool="gpu_a100")) == 0.0  # a re-read is not charged again
    assert led.task_finished(task("load", t0, 2, state=RunState.RUNNING)) == 0.0  # not finished: no charge yet
    assert led.task_finished(task("load", t0, 2, state=RunState.FAILED)) == pytest.approx(1.0)  # failures cost too
    flow = RunUpdate(
        source="pf", pipeline="flow/deploy", run_id="f1", state=RunState.SUCCESS, ended_at=t0, pool="k8s-large"
    )
    assert led.run_finished(flow, []) == pytest.approx(0.25)  # the run's own work pool (Prefect)
    report = RunUpdate(source="af", pipeline="report_daily", run_id="r9", state=RunState.SUCCESS, ended_at=t0)
    assert led.run_finished(report, []) == pytest.approx(1.0)
    s = scrape(metrics)
    etl = frozenset({"source": "af", "pipeline": "etl"}.items())
    assert s[("sentinel_cost_dollars_total", etl)] == pytest.approx(19.0)
    assert s[("sentinel_cost_month_to_date_dollars", frozenset())] == pytest.approx(20.25)
    assert s[("sentinel_cost_budget_dollars", frozenset())] == 1000.0


def test_month_to_date_and_forecast_at_the_trailing_seven_day_rate() -> None:
    led, clock, metrics = ledger(utc(2026, 11, 10, 12))
    for day in range(3, 10):  # $10 a day at noon, 3rd to 9th
        led.task_finished(
            task(f"t{day}", utc(2026, 11, day, 12) - timedelta(hours=20), 20)
        )  # 20 h at the $0.5 catch-all
    led.task_finished(task("today", utc(2026, 11, 10, 0), 10))  # $5 so far today
    now = clock.now()
    assert led.month_to_date(now) == pytest.approx(75.0)
    # The rate: $65 over the 6 whole days before today plus today's 12 hours = $10/day; 20.5 days are left.
    assert led.forecast(now) == pytest.approx(75.0 + 10.0 * 20.5)
    s = scrape(metrics)
    assert s[("sentinel_cost_month_forecast_dollars", frozenset())] == pytest.approx(280.0)

    # On the first of the month the new month has little spent, but the trailing rate still projects it.
    clock.set(utc(2026, 12, 1, 6))
    led.task_finished(task("dec", utc(2026, 11, 30, 22), 8))  # $4, ends Dec 1 06:00
    assert led.month_to_date(clock.now()) == pytest.approx(4.0)
    trailing = (4.0 + 0.0) / (6.25)  # Nov 25-30 had nothing; Dec 1 so far $4 over 6 whole days + 6 h
    assert led.forecast(clock.now()) == pytest.approx(4.0 + trailing * (30 + 18 / 24))


def test_forecast_before_a_week_of_data_uses_the_time_since_the_first_charge() -> None:
    led, clock, _ = ledger(utc(2026, 11, 10, 12))
    led.task_finished(task("t", utc(2026, 11, 10, 2), 12))  # $6 ending 14:00
    clock.set(utc(2026, 11, 10, 20))  # six hours after the first charge
    assert led.forecast(clock.now()) == pytest.approx(6.0 + 6.0 / 6 * (20 * 24 + 4))


BUDGET_RULES = """\
groups:
  - name: cost
    rules:
      - alert: SpendForecast
        when: budget
        share: 0.9
        annotations: {summary: "forecast {{ amount }} is {{ percent }}% of {{ budget }}"}
      - alert: SpendSoFar
        when: budget
        of: month_to_date
        share: 0.5
"""


def test_budget_condition_fires_on_forecast_before_month_to_date(tmp_path: Path) -> None:
    led, clock, _ = ledger(utc(2026, 11, 10, 12), budget=300.0)
    (tmp_path / "r.yaml").write_text(BUDGET_RULES)
    engine = RuleEngine(load_rules([tmp_path / "r.yaml"]))
    engine.extras["cost"] = led
    history = History()
    engine.evaluate(history, clock.now())
    assert engine.alerts() == []
    for day in range(3, 10):
        led.task_finished(task(f"t{day}", utc(2026, 11, day, 12) - timedelta(hours=20), 20))
    led.task_finished(task("today", utc(2026, 11, 10, 0), 10))  # forecast 280 > 0.9 × 300; spent 75 < 150
    firing = {a.name: a for a in engine.evaluate(history, clock.now())}
    assert set(firing) == {"SpendForecast"}
    assert dict(firing["SpendForecast"].annotations)["summary"] == "forecast 280.0 is 93.3% of 300.0"
    assert dict(firing["SpendForecast"].labels) == {"alertname": "SpendForecast", "severity": "warning"}


def test_budget_condition_needs_a_budget(tmp_path: Path) -> None:
    led, clock, _ = ledger(utc(2026, 11, 10, 12), budget=None)
    (tmp_path / "r.yaml").write_text(BUDGET_RULES)
    engine = RuleEngine(load_rules([tmp_path / "r.yaml"]))
    engine.extras["cost"] = led
    led.task_finished(task("t", utc(2026, 11, 10, 0), 1000))
    assert engine.evaluate(History(), clock.now()) == []


def test_totals_survive_a_restart() -> None:
    led, clock, _ = ledger(utc(2026, 11, 10, 12))
    led.task_finished(task("train", utc(2026, 11, 10, 8), 1, pool="gpu"))
    saved = led.take_changes()
    again, _, metrics = ledger(clock.now())
    again.restore(saved)
    assert again.month_to_date(clock.now()) == pytest.approx(12.0)
    again.task_finished(task("more", utc(2026, 11, 10, 9), 1, pool="gpu"))
    s = scrape(metrics)
    assert s[("sentinel_cost_dollars_total", frozenset({"source": "af", "pipeline": "etl"}.items()))] == 24.0


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("{pool: gpu}", "a rate needs per_task_hour or per_run"),
        ("{per_run: -1}", "greater than or equal to 0"),
        ("{per_run: 1, cluster: x}", "unknown key 'cluster'"),
    ],
)
def test_bad_rates_are_reported_with_their_position(tmp_path: Path, rate: str, message: str) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        "receivers: [{name: r, console: true}]\nroute: {receiver: r}\n"
        f"cost:\n  monthly_budget: 100\n  rates:\n    - {{per_task_hour: 1}}\n    - {rate}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert text.startswith(f"{cfg}:7:"), text
    assert message in text, text
