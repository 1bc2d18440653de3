"""Prometheus `/metrics` on prometheus-client: the database's gauges and the processes' observations.

The library writes the exposition (text format 0.0.4, or OpenMetrics when the scrape's Accept
asks for `application/openmetrics-text`) and escapes label values. Two collectors feed a scrape:

- `DatabaseCollector`: gauges computed from the database at scrape time by
  `pipelines.operations.stats`, so any replica answers the same and nothing is lost on restart;
  what each counts is in `storage.stats`. A figure with no value (no finished runs: no error
  rate, no percentiles) is left out rather than reported as 0 or NaN. Percentiles do not add up
  across pipelines, so every pipeline together has its own `gatehouse_overall_*` gauges (counts
  are left to PromQL's `sum`). The outbox has gauges of its own: what is undelivered and dead
  (from the database) and what holds delivery in this process (a paused sender:
  `gatehouse_outbox_paused{reason="token_revoked"} 1`; subjects waiting for a scope); each
  replica pauses on its own from Slack's answers, so alert on the `max` over replicas. The
  budgets have theirs (pipelines.budgets): per budgeted pipeline, today's (UTC) spend and
  reservations, its limits and what is left, the calls to a model without a price, and the last
  hour's runs against the run rate.
- `bot.http.observed.ProcessCollector`: the histograms and counters of what the processes
  observed (every process's, through PROMETHEUS_MULTIPROC_DIR, else this one's).

With GATEHOUSE_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>` (the
Prometheus `authorization` setting); anything else gets 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.http.observed import ProcessCollector
from pipelines import Gatehouse
from pipelines.budgets import budget_statuses
from pipelines.operations.stats import (
    DAY,
    LATENCY_RELATIVE_ERROR,
    PipelineStats,
    StatsReport,
    WindowStats,
    pipeline_stats,
)
from pipelines.outbox import delivery_pauses
from pipelines.runtime import Runtime
from storage import outbox as outbox_rows

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what a scrape without Accept gets


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    value: Callable[[WindowStats, PipelineStats], float | None]


GAUGES = (
    Gauge("gatehouse_runs_24h", "Runs created in the last 24 hours.", lambda w, _: w.runs),
    Gauge("gatehouse_finished_24h", "Runs finished in the last 24 hours.", lambda w, _: w.finished),
    Gauge(
        "gatehouse_errors_24h",
        "Runs that finished failed or needs_attention in the last 24 hours.",
        lambda w, _: w.errors,
    ),
    Gauge(
        "gatehouse_error_rate_24h",
        "Errors over finished runs in the last 24 hours (0 to 1).",
        lambda w, _: w.error_rate,
    ),
    Gauge(
        "gatehouse_latency_p50_seconds_24h",
        "Median time from creation to finish of the runs finished in the last 24 hours.",
        lambda w, _: w.p50_seconds,
    ),
    Gauge(
        "gatehouse_latency_p95_seconds_24h",
        "95th percentile time from creation to finish of the runs finished in the last 24 hours.",
        lambda w, _: w.p95_seconds,
    ),
    Gauge(
        "gatehouse_cost_per_run_usd_24h",
        "LLM cost per run created in the last 24 hours, in US dollars.",
        lambda w, _: w.cost_per_run,
    ),
    Gauge(
        "gatehouse_prompt_tokens_24h",
        "LLM prompt tokens of the runs created in the last 24 hours.",
        lambda w, _: w.prompt_tokens,
    ),
    Gauge(
        "gatehouse_completion_tokens_24h",
        "LLM completion tokens of the runs created in the last 24 hours.",
        lambda w, _: w.completion_tokens,
    ),
    Gauge(
        "gatehouse_approvals_approved_24h",
        "Approvals requested in the last 24 hours and approved.",
        lambda w, _: w.approvals_approved,
    ),
    Gauge(
        "gatehouse_approvals_rejected_24h",
        "Approvals requested in the last 24 hours and rejected.",
        lambda w, _: w.approvals_rejected,
    ),
    Gauge(
        "gatehouse_approvals_expired_24h",
        "Approvals requested in the last 24 hours that expired undecided.",
        lambda w, _: w.approvals_expired,
    ),
    Gauge(
        "gatehouse_approval_decision_median_seconds_24h",
        "Median time to approve or reject, of the approvals requested in the last 24 hours.",
        lambda w, _: w.median_decision_seconds,
    ),
    Gauge(
        "gatehouse_human_task_rate_24h",
        "Share of the runs created in the last 24 hours that asked a person (0 to 1).",
        lambda w, _: w.human_task_rate,
    ),
    Gauge(
        "gatehouse_pending_approvals",
        "Approvals waiting for a decision now.",
        lambda _, p: p.pending.approvals,
    ),
    Gauge(
        "gatehouse_open_human_tasks",
        "Human tasks waiting for an answer now.",
        lambda _, p: p.pending.tasks,
    ),
)


_PRECISION = f"within {LATENCY_RELATIVE_ERROR:.1%} once rolled up"
OVERALL_GAUGES = (
    Gauge(
        "gatehouse_overall_latency_p50_seconds_24h",
        "Median creation-to-finish time over every pipeline's runs finished in the last 24 hours "
        f"({_PRECISION}).",
        lambda w, _: w.p50_seconds,
    ),
    Gauge(
        "gatehouse_overall_latency_p95_seconds_24h",
        "95th percentile creation-to-finish time over every pipeline's runs finished in the last "
        f"24 hours ({_PRECISION}).",
        lambda w, _: w.p95_seconds,
    ),
    Gauge(
        "gatehouse_overall_approval_decision_median_seconds_24h",
        "Median time to approve or reject, over every pipeline, last 24 hours.",
        lambda w, _: w.median_decision_seconds,
    ),
)


OUTBOX_GAUGES = {
    "gatehouse_outbox_undelivered": "Outbox rows not delivered yet (cards, alerts, reviews owed).",
    "gatehouse_outbox_dead": "Outbox rows given up on (kept for a week; see the logs' outbox.dead).",
    "gatehouse_outbox_oldest_undelivered_seconds": "Age of the oldest undelivered outbox row.",
    "gatehouse_outbox_paused": "1 while this process's delivery to Slack is paused (the reason "
    "label is Slack's error: reinstall the app / set a new SLACK_BOT_TOKEN), else 0.",
    "gatehouse_outbox_held": "Subjects this process holds for an operator's fix (the reason label "
    "is Slack's error, e.g. missing_scope: add the scope the logs name and reinstall).",
}


BUDGET_GAUGES = {
    "gatehouse_budget_spent_usd": "Model spend of the calls that returned, in US dollars "
    '(window="day": since UTC midnight).',
    "gatehouse_budget_reserved_usd": "Model spend reserved by calls in flight, in US dollars.",
    "gatehouse_budget_limit_usd": 'The budget in US dollars (window="day" or "run").',
    "gatehouse_budget_left_usd": "What is left of the day budget, in US dollars (spent and "
    "reserved taken off).",
    "gatehouse_budget_unpriced_calls": "Model calls to a model without a price today: their "
    "spend is unknown, not zero (set GATEHOUSE_LLM_PRICES).",
    "gatehouse_budget_runs": "Runs created in the last hour (the run rate's window).",
    "gatehouse_budget_runs_limit": "The run rate: runs allowed per hour.",
}


class DatabaseCollector:
    """The gauges computed from the database at scrape time (the same on every replica), and
    the outbox's pauses of this process."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        yield from _stats_gauges(pipeline_stats(self.rt, windows=[DAY]))
        yield from _outbox_gauges(self.rt)
        yield from _budget_gauges(self.rt)


def _stats_gauges(report: StatsReport) -> Iterator[Metric]:
    """One sample per pipeline that has a value; a figure with none is left out."""
    for gauge in GAUGES:
        family = GaugeMetricFamily(gauge.name, gauge.help, labels=["pipeline"])
        for p in report.pipelines:
            window = p.window(DAY)
            value = None if window is None else gauge.value(window, p)
            if value is not None:
                family.add_metric([p.pipeline], value)
        yield family
    overall = report.overall_stats()
    for gauge in OVERALL_GAUGES:
        family = GaugeMetricFamily(gauge.name, gauge.help)
        value = gauge.value(overall.windows[0], overall)
        if value is not None:
            family.add_metric([], value)
        yield family


def _outbox_gauges(rt: Runtime) -> Iterator[Metric]:
    """Rows from the database, pauses from this process."""
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        counts = outbox_rows.counts(conn)
        oldest = outbox_rows.oldest_pending(conn)
    pauses = delivery_pauses(rt.db)
    names = iter(OUTBOX_GAUGES.items())

    def family(labels: Sequence[str] = ()) -> GaugeMetricFamily:
        name, help_text = next(names)
        return GaugeMetricFamily(name, help_text, labels=labels)

    undelivered, dead, oldest_age = family(), family(), family()
    undelivered.add_metric([], counts.get("pending", 0))
    dead.add_metric([], counts.get("dead", 0))
    if oldest is not None:
        oldest_age.add_metric([], max((now - oldest).total_seconds(), 0.0))
    paused, held = family(["reason"]), family(["reason"])
    if pauses.pause is None:
        paused.samples.append(Sample(paused.name, {}, 0.0))
    else:
        paused.add_metric([pauses.pause.reason], 1)
    for reason, count in sorted(pauses.held(now).items()):
        held.add_metric([reason], count)
    yield from (undelivered, dead, oldest_age, paused, held)


def _budget_gauges(rt: Runtime) -> Iterator[Metric]:
    """One sample per budgeted pipeline and window; a limit not set is left out."""
    families = {
        name: GaugeMetricFamily(name, help_text, labels=["pipeline", "window"])
        for name, help_text in BUDGET_GAUGES.items()
    }

    def add(name: str, pipeline: str, window: str, value: float) -> None:
        families[name].add_metric([pipeline, window], value)

    for status in budget_statuses(rt):
        pipeline, budget = status.pipeline, status.budget
        add("gatehouse_budget_spent_usd", pipeline, "day", status.day.spent_usd)
        add("gatehouse_budget_reserved_usd", pipeline, "day", status.day.in_flight_usd)
        add("gatehouse_budget_unpriced_calls", pipeline, "day", status.day.unpriced)
        if budget.max_cost_per_day is not None:
            add("gatehouse_budget_limit_usd", pipeline, "day", budget.max_cost_per_day)
            add("gatehouse_budget_left_usd", pipeline, "day", status.day_left_usd or 0.0)
        if budget.max_cost_per_run is not None:
            add("gatehouse_budget_limit_usd", pipeline, "run", budget.max_cost_per_run)
        add("gatehouse_budget_runs", pipeline, "hour", status.runs_last_hour)
        if budget.max_runs_per_hour is not None:
            add("gatehouse_budget_runs_limit", pipeline, "hour", budget.max_runs_per_hour)
    yield from families.values()


def scrape_registry(rt: Runtime) -> CollectorRegistry:
    """Everything one scrape shows: the database's gauges and the processes' observations."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(rt))
    registry.register(ProcessCollector())
    return registry


def render(rt: Runtime, accept: str) -> tuple[bytes, str]:
    """The scrape in the format `accept` asks for (OpenMetrics or the text format 0.0.4)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(scrape_registry(rt)), content_type


def metrics_routes(gatehouse: Gatehouse, *, token: SecretStr | None = None) -> list[Route]:
    """`GET /metrics`, to mount on the bot's Starlette app beside `/slack/events`; with a
    `token`, only for requests that bring it as a bearer token."""
    expected = f"Bearer {token.get_secret_value()}".encode() if token else None

    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return Response(
                    "unauthorized: send Authorization: Bearer <GATEHOUSE_METRICS_TOKEN>\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="gatehouse metrics"'},
                    media_type="text/plain",
                )
        accept = request.headers.get("accept", "")
        body, content_type = await run_in_threadpool(render, gatehouse.rt, accept)
        return Response(body, headers={"Content-Type": content_type})

    return [Route("/metrics", metrics, methods=["GET"])]
