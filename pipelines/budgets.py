"""Budgets, both ends: what a pipeline may spend (`@pipeline(max_cost_per_run=…,
max_cost_per_day=…, max_runs_per_hour=…, on_budget=…)`, overridden by GATEHOUSE_BUDGETS), the
gate a model call passes before it is sent, the gate a new run passes before it is created, and
the figures the displays show (`gatehouse stats`, App Home, /metrics, `gatehouse ready`).

The rule (a call's cost is known only after it returns):
- a model call is sent only while the run's spent + reserved money is under `max_cost_per_run`
  and the pipeline's spent + reserved money today (UTC) is under `max_cost_per_day`;
- a call in flight reserves the cost of the pipeline's dearest call today, so two replicas
  racing for the last of a day budget cannot both spend it (the second sees the first's
  reservation); the reservation is replaced by the real cost when the call returns;
- a model without a price cannot be kept to a USD budget: under a money budget, a call to it is
  not sent (fail closed), and the reason names GATEHOUSE_LLM_PRICES;
- a new run is created only while the pipeline has created fewer than `max_runs_per_hour` runs
  in the last hour.
Counts are taken in the transaction that records the reservation (or the run), under a lock per
pipeline on PostgreSQL (SQLite's write lock serializes them already), so replicas share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import structlog
from sqlalchemy import Connection

from pipelines import pauses
from pipelines.budget_limits import Budget, InvalidBudget, checked_budget
from pipelines.config import ConfigurationError
from pipelines.errors import GatehouseError, UnknownPipeline
from pipelines.llm import LLMResult, price_for
from pipelines.operations.alerting import AlertChange, log_changes, open_alert
from pipelines.pipeline import Pipeline, get_pipeline, registered_pipelines
from pipelines.runtime import Runtime
from storage import alerts as alert_rows
from storage import spend as spend_rows
from storage.ids import new_id

if TYPE_CHECKING:
    from pipelines.context import ModelRequest
    from pipelines.journal import Journal, NextCall

log = structlog.get_logger()

BUDGET = "budget"  # the alert rule
HOUR = timedelta(hours=1)
# Shown amber by `gatehouse ready` and App Home from this share of a limit on.
NEAR = 0.8
PAUSED_BY = "gatehouse"  # who a budget's pause is recorded as
PAUSE_KEY = "pause"  # in a budget alert's details: {"paused": bool, "source": "budget:day"}


class BudgetExceeded(GatehouseError):
    """`on_budget="fail"`: the run stopped before a model call its budget does not allow."""


class RunRateExceeded(GatehouseError):
    """A new run refused: its pipeline created `max_runs_per_hour` runs in the last hour."""

    def __init__(self, message: str, reason: str, alert: AlertChange | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.alert = alert  # the budget alert this refusal opened (None: one was open already)


def overrides_from_settings(
    configured: Mapping[str, Mapping[str, Any]], pipelines: Mapping[str, Pipeline]
) -> dict[str, Budget]:
    """GATEHOUSE_BUDGETS over the pipelines' own budgets; every problem in one error."""
    problems: list[str] = []
    unknown = sorted(set(configured) - set(pipelines))
    if unknown:
        known = ", ".join(sorted(pipelines)) or "none are registered"
        problems.append(
            f"GATEHOUSE_BUDGETS names no such pipeline: {', '.join(unknown)} (pipelines: {known})"
        )
    chosen: dict[str, Budget] = {}
    for name, values in configured.items():
        if name not in pipelines:
            continue
        try:
            chosen[name] = checked_budget(
                f"GATEHOUSE_BUDGETS[{name!r}]", values, pipelines[name].budget
            )
        except InvalidBudget as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError("; ".join(problems))
    return chosen


def budget_for(rt: Runtime, pipeline: str) -> Budget | None:
    """The budget a pipeline runs under: GATEHOUSE_BUDGETS's, else its decorator's."""
    override = rt.budgets.get(pipeline)
    if override is not None:
        return override if override.limits_anything else None
    try:
        budget = get_pipeline(pipeline).budget
    except UnknownPipeline:
        return None
    return budget if budget is not None and budget.limits_anything else None


def day_start(now: datetime) -> datetime:
    """The budget day: UTC midnight."""
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def usd(value: float) -> str:
    return f"{value:.2f} USD"


def _calls(count: int) -> str:
    return f"{count} model call{'s' if count != 1 else ''}"


# -- the model call's gate ------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """A model call let through: its `in_flight` row, settled when it returns."""

    spend_id: str


def before_model_call(
    journal: Journal, call: NextCall, request: ModelRequest
) -> Reservation | LLMResult | None:
    """May this model call be sent? None: no money budget (nothing recorded); a Reservation:
    yes; an LLMResult with `failure="budget"`: no, and why (the human exit, or CannotAnswer with
    `on_fail="raise"`). With `on_budget="fail"`, BudgetExceeded instead."""
    rt = journal.rt
    budget = budget_for(rt, journal.pipeline)
    if budget is None or not budget.limits_money:
        return None
    model = request.model or rt.llm_config.model
    if not model or not rt.llm_config.configured:
        return None  # no model: nothing is sent, nothing spent (the call goes to a person)
    now = rt.clock.now()
    refusal: str | None = None
    day_over = False
    day_change: AlertChange | None = None
    with journal.transaction() as conn:
        unpriced = price_for(rt.llm_config.prices, model) is None
        if unpriced:
            refusal = (
                f"no price is configured for model {model}, so its spend is unknown and the "
                f"budget of {journal.pipeline} cannot be kept; add the model to "
                "GATEHOUSE_LLM_PRICES (USD per million tokens)"
            )
        spend_rows.lock_budget(conn, journal.pipeline)
        reserve = 0.0
        if refusal is None and budget.max_cost_per_run is not None:
            run = spend_rows.run_spend(conn, journal.run_id)
            if run.committed_usd >= budget.max_cost_per_run:
                refusal = (
                    f"run budget {usd(budget.max_cost_per_run)} reached (spent "
                    f"{usd(run.committed_usd)} in {_calls(run.calls + run.in_flight)})"
                )
        if refusal is None and budget.max_cost_per_day is not None:
            day = spend_rows.pipeline_spend(conn, journal.pipeline, day_start(now))
            reserve = day.costliest_usd
            if day.committed_usd >= budget.max_cost_per_day:
                refusal = day_reason(budget.max_cost_per_day, day)
                day_over = True
                day_change = _open_budget_alert(
                    conn, journal.pipeline, "day", now, refusal, budget, day
                )
        if refusal is None:
            spend_id = new_id("spend")
            spend_rows.reserve(
                conn,
                spend_id=spend_id,
                pipeline=journal.pipeline,
                run_id=journal.run_id,
                call_key=call.key,
                model=model,
                at=now,
                reserved_usd=reserve,
            )
    if refusal is None:
        return Reservation(spend_id)
    log.warning("budget.refused", pipeline=journal.pipeline, call=call.key, reason=refusal)
    if day_over:
        # The pipeline is paused (until someone resumes it) and this run waits for the resume,
        # like every run of a paused pipeline, whatever `on_budget` says for the run budget.
        if day_change is not None:
            log_changes([day_change])
        _pause(rt, journal.pipeline, refusal, "budget:day", day_change)
        pauses.hold_if_paused(journal)
    if budget.on_budget == "fail":
        todo = (
            "Price the model" if unpriced else "Raise the budget (@pipeline or GATEHOUSE_BUDGETS)"
        )
        raise BudgetExceeded(
            f"{refusal}; the run stopped before model call {call.key}. {todo} and trigger the "
            "pipeline again, or leave it"
        )
    return LLMResult(
        model=model,
        system=request.system or "",
        prompt=request.prompt,
        failure="budget",
        reason=refusal,
    )


def after_model_call(journal: Journal, reservation: Reservation, cost: float | None) -> None:
    """The call returned (or raised): its cost replaces the reservation."""
    with journal.transaction() as conn:
        spend_rows.settle(conn, reservation.spend_id, cost)


def day_reason(limit: float, day: spend_rows.Spend) -> str:
    reason = f"day budget {usd(limit)} reached ({usd(day.spent_usd)} today"
    if day.in_flight:
        reason += f", {usd(day.in_flight_usd)} reserved by {_calls(day.in_flight)} in flight"
    return reason + ")"


def _open_budget_alert(
    conn: Connection,
    pipeline: str,
    window: Literal["day", "rate"],
    now: datetime,
    reason: str,
    budget: Budget,
    figures: spend_rows.Spend | int,
) -> AlertChange | None:
    """One budget alert per pipeline, window and day (hour for the run rate) across replicas."""
    stamp = f"{now:%Y-%m-%d}" if window == "day" else f"{now:%Y-%m-%dT%H}"
    if isinstance(figures, spend_rows.Spend):
        value, volume = figures.committed_usd, figures.calls + figures.in_flight
        limit: float = budget.max_cost_per_day or 0.0
        numbers: dict[str, Any] = {
            "spent_usd": round(figures.spent_usd, 6),
            "in_flight_usd": round(figures.in_flight_usd, 6),
            "calls": figures.calls,
            "unpriced_calls": figures.unpriced,
            "limit_usd": limit,
        }
    else:
        value, volume = float(figures), figures
        limit = float(budget.max_runs_per_hour or 0)
        numbers = {"runs_last_hour": figures, "max_runs_per_hour": budget.max_runs_per_hour}
    return open_alert(
        conn,
        rule=BUDGET,
        subject=f"{pipeline}:{window}:{stamp}",
        pipeline=pipeline,
        now=now,
        value=value,
        baseline=limit,
        volume=volume,
        details={"window": window, "reason": reason, "figures": numbers},
    )


def _pause(rt: Runtime, pipeline: str, reason: str, source: str, alert: AlertChange | None) -> None:
    """Pause the pipeline until someone resumes it (pipelines.pauses), and record on the alert
    whether this paused it (`PAUSE_KEY`: False, it was paused already), which its message shows."""
    paused = pauses.pause_pipeline(rt, pipeline, by=PAUSED_BY, reason=reason, source=source)
    if paused:
        log.warning("budget.paused", pipeline=pipeline, reason=reason, source=source)
    if alert is not None:
        with rt.db.transaction() as conn:
            alert_rows.update_alert(
                conn, alert.alert.id, patch={PAUSE_KEY: {"paused": paused, "source": source}}
            )


# -- the new run's gate ---------------------------------------------------------------------


def limits_runs(rt: Runtime, pipeline: str) -> bool:
    budget = budget_for(rt, pipeline)
    return budget is not None and budget.max_runs_per_hour is not None


def admit_run(
    rt: Runtime, conn: Connection, pipeline: str, now: datetime
) -> RunRateExceeded | None:
    """Inside the transaction that creates a run: may it be created? The refusal comes back (to
    raise after the commit, which keeps its alert); None: create it."""
    budget = budget_for(rt, pipeline)
    if budget is None or budget.max_runs_per_hour is None:
        return None
    spend_rows.lock_run_rate(conn, pipeline)
    runs = spend_rows.runs_since(conn, pipeline, now - HOUR)
    if runs < budget.max_runs_per_hour:
        return None
    reason = f"run rate {budget.max_runs_per_hour}/hour reached ({runs} runs in the last hour)"
    change = _open_budget_alert(conn, pipeline, "rate", now, reason, budget, runs)
    if change is not None:
        log_changes([change])
    return RunRateExceeded(
        f"{pipeline} takes no new run: {reason}. Raise max_runs_per_hour (@pipeline or "
        "GATEHOUSE_BUDGETS) or wait for the hour to have room",
        reason,
        change,
    )


def after_run_refused(rt: Runtime, pipeline: str, refused: RunRateExceeded) -> NoReturn:
    """After the refusal's transaction committed: pause the pipeline, and refuse the trigger as
    a paused pipeline's is refused (PipelinePaused); RunRateExceeded if someone resumed it in
    between."""
    _pause(rt, pipeline, refused.reason, "budget:rate", refused.alert)
    pauses.refuse_if_paused(rt, pipeline)
    raise refused


# -- what the displays show -----------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    """One pipeline's budget and what is left of it, now."""

    pipeline: str
    budget: Budget
    day: spend_rows.Spend
    runs_last_hour: int
    now: datetime

    @property
    def day_left_usd(self) -> float | None:
        if self.budget.max_cost_per_day is None:
            return None
        return max(0.0, self.budget.max_cost_per_day - self.day.committed_usd)

    def share(self) -> float:
        """The largest share of a limit used (day money, run rate); 0 without those limits."""
        shares = [0.0]
        if self.budget.max_cost_per_day:
            shares.append(self.day.committed_usd / self.budget.max_cost_per_day)
        if self.budget.max_runs_per_hour:
            shares.append(self.runs_last_hour / self.budget.max_runs_per_hour)
        return max(shares)

    @property
    def state(self) -> Literal["ok", "near", "over"]:
        share = self.share()
        return "over" if share >= 1 else "near" if share >= NEAR else "ok"

    def summary(self) -> str:
        """`day 3.20 of 20.00 USD (16.80 left) · runs 12 of 30 this hour · run ≤ 0.50 USD`."""
        parts = []
        if self.budget.max_cost_per_day is not None:
            parts.append(
                f"day {self.day.committed_usd:.2f} of {usd(self.budget.max_cost_per_day)} "
                f"({self.day_left_usd or 0:.2f} left)"
            )
        if self.budget.max_runs_per_hour is not None:
            parts.append(f"runs {self.runs_last_hour} of {self.budget.max_runs_per_hour} this hour")
        if self.budget.max_cost_per_run is not None:
            parts.append(f"run ≤ {usd(self.budget.max_cost_per_run)}")
        if self.day.unpriced:
            parts.append(f"{_calls(self.day.unpriced)} to an unpriced model (spend unknown)")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            **self.budget.to_json(),
            "spent_today_usd": round(self.day.spent_usd, 6),
            "in_flight_usd": round(self.day.in_flight_usd, 6),
            "left_today_usd": None if self.day_left_usd is None else round(self.day_left_usd, 6),
            "model_calls_today": self.day.calls,
            "unpriced_calls_today": self.day.unpriced,
            "runs_last_hour": self.runs_last_hour,
            "state": self.state,
        }


def budget_statuses(rt: Runtime, names: list[str] | None = None) -> list[BudgetStatus]:
    """Every registered pipeline that has a budget (or those of `names` that have one), with
    what is left of it, by name."""
    now = rt.clock.now()
    chosen = [
        (name, budget)
        for name in (registered_pipelines() if names is None else names)
        if (budget := budget_for(rt, name)) is not None
    ]
    if not chosen:
        return []
    statuses = []
    with rt.db.transaction() as conn:
        for name, budget in sorted(chosen):
            statuses.append(
                BudgetStatus(
                    pipeline=name,
                    budget=budget,
                    day=spend_rows.pipeline_spend(conn, name, day_start(now)),
                    runs_last_hour=spend_rows.runs_since(conn, name, now - HOUR),
                    now=now,
                )
            )
    return statuses
