"""The KPI bundle the daemon owns: fed by poll results and evaluations, saved to and restored from the store."""

from __future__ import annotations

from datetime import datetime

from sentinel.alerting.route import Route
from sentinel.clock import Clock
from sentinel.config import CostConfig
from sentinel.cost import ledger
from sentinel.cost.ledger import CostLedger
from sentinel.kpi import pipelines, sla
from sentinel.kpi.oncall import OnCallKpis
from sentinel.kpi.pipelines import PipelineKpis
from sentinel.kpi.sla import SlaKpis
from sentinel.metrics import Metrics
from sentinel.observe.history import Changes, History
from sentinel.rules.engine import RuleEngine
from sentinel.store import Store


class Kpis:
    def __init__(self, metrics: Metrics, clock: Clock, history: History, cost: CostConfig) -> None:
        self.history = history
        self.pipelines = PipelineKpis(metrics, clock, history)
        self.sla = SlaKpis(metrics, clock)
        self.cost = CostLedger(cost, metrics, clock)
        self.oncall = OnCallKpis(metrics)

    async def restore(self, store: Store, engine: RuleEngine) -> None:
        """After the history and the rule state are restored: counters continue where they stopped."""
        self.pipelines.restore(await store.all(pipelines.NAMESPACE))
        self.sla.restore(await store.all(sla.NAMESPACE))
        self.cost.restore(await store.all(ledger.NAMESPACE))
        self.oncall.seed(engine.instance_list())

    def on_changes(self, changes: Changes) -> None:
        self.pipelines.see_pipelines()
        for task in changes.tasks:
            self.cost.task_finished(task)
        for run in changes.finished:
            self.pipelines.run_finished(run)
            ph = self.history.pipelines.get(run.key)
            self.cost.run_finished(run, ph.tasks_of(run.run_id) if ph is not None else [])

    def on_evaluate(self, engine: RuleEngine, route: Route, now: datetime, *, full: bool) -> None:
        if full:  # SLA periods turn on the clock, not on a run: ticks are enough
            self.sla.evaluate(engine.rules, self.history, engine.extras, now)
        self.oncall.observe(engine.instance_list(), route)

    def reload(self, cost: CostConfig) -> None:
        self.cost.configure(cost)
        self.sla.forget_selections()

    async def persist(self, store: Store) -> None:
        await store.put_many(pipelines.NAMESPACE, self.pipelines.take_changes())
        await store.put_many(sla.NAMESPACE, self.sla.take_changes())
        await store.put_many(ledger.NAMESPACE, self.cost.take_changes())
