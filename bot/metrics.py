"""Prometheus `/metrics`: the stats of the last 24 h per pipeline, in the text exposition format.

Written by hand (the format is a few lines of text; no client library to configure). Every
figure is a gauge computed from the database at scrape time by `pipelines.stats`, so any
replica answers the same and nothing is lost on restart; what each counts is in `storage.stats`.
A figure with no value (no finished runs: no error rate, no percentiles) is left out rather
than reported as 0 or NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines import Gatehouse
from pipelines.stats import DAY, PipelineStats, StatsReport, WindowStats, pipeline_stats

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
        samples = list(_samples(gauge, report.pipelines))
        lines.append(f"# HELP {gauge.name} {_escape_help(gauge.help)}")
        lines.append(f"# TYPE {gauge.name} gauge")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _samples(gauge: Gauge, pipelines: Iterable[PipelineStats]) -> Iterable[str]:
    for p in pipelines:
        window = p.window(DAY)
        if window is None:
            continue
        value = gauge.value(window, p)
        if value is not None:
            yield f'{gauge.name}{{pipeline="{escape_label(p.pipeline)}"}} {_number(value)}'


def metrics_routes(gatehouse: Gatehouse) -> list[Route]:
    """`GET /metrics`, to mount on the bot's Starlette app beside `/slack/events`."""

    async def metrics(_request: Request) -> Response:
        report = await run_in_threadpool(pipeline_stats, gatehouse.rt, windows=[DAY])
        return Response(exposition(report), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
