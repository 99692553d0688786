"""`when: budget` — this month's cost (forecast or so far) passes a share of the monthly budget.

    - alert: CostForecastOverBudget
      when: budget
      of: forecast          # forecast (default): the month-end projection | month_to_date: spent so far
      share: 0.9            # fires above 90 % of the budget
      budget: 800           # optional; default cost.monthly_budget in sentinel.yaml

Costs come from the cost ledger (`cost.rates` in sentinel.yaml; see docs/metrics.md#cost), which the
daemon hands to conditions as `extras["cost"]`. One alert for the whole installation: its labels are only
alertname and severity (plus the rule's and group's own). Nothing fires without a budget, and without a
ledger (in `sentinel test`, which has no cost data) a firing alert is kept as it is rather than resolved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import Field

from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope


class Ledger(Protocol):
    @property
    def budget(self) -> float | None: ...

    def month_to_date(self, now: datetime) -> float: ...

    def forecast(self, now: datetime) -> float: ...


class BudgetRule(RuleBase):
    scope: ClassVar[str] = "source"  # evaluated on ticks, never per finished run
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"of", "amount", "budget", "share", "month_to_date", "forecast", "percent"}
    )

    when: Literal["budget"]
    of: Literal["forecast", "month_to_date"] = "forecast"
    share: Annotated[float, Field(gt=0, le=10)] = 1.0
    budget: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


def _never(_labels: Any) -> bool:
    return False


def evaluate(rule: BudgetRule, scope: Scope) -> Evaluation:
    ledger: Ledger | None = scope.extras.get("cost")
    if ledger is None:
        return Evaluation([], settled=_never)
    budget = rule.budget if rule.budget is not None else ledger.budget
    if budget is None:
        return Evaluation([])
    mtd = ledger.month_to_date(scope.now)
    forecast = ledger.forecast(scope.now)
    amount = forecast if rule.of == "forecast" else mtd
    if amount <= rule.share * budget:
        return Evaluation([])
    return Evaluation(
        [
            Finding(
                {},
                {
                    "of": rule.of,
                    "amount": round(amount, 2),
                    "budget": budget,
                    "share": rule.share,
                    "month_to_date": round(mtd, 2),
                    "forecast": round(forecast, 2),
                    "percent": round(100 * amount / budget, 1),
                    "value": round(amount, 2),
                },
            )
        ]
    )


MODEL = BudgetRule
