"""Prometheus `/metrics`: the stats of the last 24 h per pipeline, in the text exposition format.

Written by hand (the format is a few lines of text; no client library to configure). Every
figure is a gauge computed from the database at scrape time by `pipelines.operations.stats`, so any
replica answers the same and nothing is lost on restart; what each counts is in `storage.stats`.
A figure with no value (no finished runs: no error rate, no percentiles) is left out rather
than reported as 0 or NaN. Percentiles do not add up across pipelines, so every pipeline
together has its own `gatehouse_overall_*` gauges (counts are left to PromQL's `sum`).

With GATEHOUSE_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>` (the
Prometheus `authorization` setting); anything else gets 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines import Gatehouse
from pipelines.operations.stats import (
    DAY,
    LATENCY_RELATIVE_ERROR,
    PipelineStats,
    StatsReport,
    WindowStats,
    pipeline_stats,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def exposition(report: StatsReport) -> str:
    """Every gauge with a HELP and a TYPE line, then one sample per pipeline that has a value."""
    lines: list[str] = []
    for gauge in GAUGES:
        lines.extend(_header(gauge))
        lines.extend(_samples(gauge, report.pipelines))
    overall = report.overall_stats()
    for gauge in OVERALL_GAUGES:
        lines.extend(_header(gauge))
        value = gauge.value(overall.windows[0], overall)
        if value is not None:
            lines.append(f"{gauge.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _header(gauge: Gauge) -> list[str]:
    return [f"# HELP {gauge.name} {_escape_help(gauge.help)}", f"# TYPE {gauge.name} gauge"]


def _samples(gauge: Gauge, pipelines: Iterable[PipelineStats]) -> Iterable[str]:
    for p in pipelines:
        window = p.window(DAY)
        if window is None:
            continue
        value = gauge.value(window, p)
        if value is not None:
            yield f'{gauge.name}{{pipeline="{escape_label(p.pipeline)}"}} {_number(value)}'


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
        report = await run_in_threadpool(pipeline_stats, gatehouse.rt, windows=[DAY])
        return Response(exposition(report), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
