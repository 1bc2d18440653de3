"""`gatehouse stats`: per-pipeline numbers over a window as a table or JSON, and the 7-day chart.

A Typer sub-app mounted by `bot.cli` (`app.add_typer(cli_stats.app, name="stats")`); its errors
reach the root command, which prints one `error: …` line and exits 1. The numbers are
`pipelines.operations.stats.pipeline_stats` (what each counts is written in `storage.stats`), read after
rolling up the hours `gatehouse serve` has not; `--chart` writes the PNG `/gatehouse stats`
uploads (`bot.slack.charts`, over `pipelines.operations.daily_stats`). The table shows the same figures as
`/gatehouse stats` and the App Home, with tokens split into prompt+completion.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.session import CliError, JsonFlag, open_gatehouse, print_json, say, settings_for_cli

if TYPE_CHECKING:
    from pipelines.budgets import BudgetStatus
    from pipelines.operations.drift import DriftFigures
    from pipelines.operations.stats import StatsReport, WindowStats

app = typer.Typer(
    name="stats",
    help="Volume, error rate, latency, cost, tokens, approvals and human tasks per pipeline.",
    add_completion=False,
    rich_markup_mode=None,
)

COLUMNS = [
    "pipeline",
    "runs",
    "err",
    "p50",
    "p95",
    "$/run",
    "tokens",
    "appr/rej/exp",
    "decide",
    "tasks",
]


@app.callback(invoke_without_command=True)
def stats_default(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    since: Annotated[
        str, typer.Option("--since", help="The window, ending now (7d, 24h, 30m).")
    ] = "7d",
    as_json: JsonFlag = False,
    chart: Annotated[
        Path | None,
        typer.Option("--chart", help="Also write the last 7 days as a PNG chart to this file."),
    ] = None,
) -> None:
    """Every pipeline's numbers over the last 7 days (or --since), and all of them together."""
    from pipelines.budgets import budget_statuses
    from pipelines.durations import parse_duration
    from pipelines.operations.drift import drift_figures
    from pipelines.operations.stats import pipeline_stats, roll_up_stats

    try:
        window = parse_duration(since)
    except ValueError:
        raise CliError(f"--since {since!r} is not a duration; use e.g. 30m, 24h, 7d") from None
    if window <= timedelta(0):
        raise CliError(f"--since {since!r} must be longer than zero")
    render = _chart_renderer() if chart is not None else None
    settings = settings_for_cli()
    with open_gatehouse(quiet=as_json, settings=settings, read_only=True) as gatehouse:
        # Whatever `gatehouse serve` has not rolled up yet (or ever, without serve): the hours
        # rolled now make this and the next reading fast; a first one over old history is slow.
        roll_up_stats(gatehouse.rt, catch_up=True)
        report = pipeline_stats(gatehouse.rt, windows=[window], pipeline=pipeline)
        drift = drift_figures(gatehouse.rt, window=window, now=report.now)
        if pipeline is not None:
            drift = {name: f for name, f in drift.items() if name == pipeline}
        png = render(gatehouse, pipeline) if render is not None else None
        budgets = budget_statuses(gatehouse.rt, [pipeline] if pipeline else None)
    if png is not None and chart is not None:
        try:
            chart.write_bytes(png)
        except OSError as exc:
            raise CliError(f"cannot write the chart to {chart}: {exc.strerror}") from None
    if as_json:
        print_json(
            {
                **report_json(report, window),
                "drift": drift_json(drift),
                "budgets": [b.to_json() for b in budgets],
            }
        )
        return
    say(table_lines(report, window))
    say(drift_lines(drift))
    say(budget_lines(budgets))
    if chart is not None:
        typer.echo(f"chart of the last 7 days written to {chart}")


def _chart_renderer() -> Any:
    """The chart's two functions, imported only when asked for (matplotlib is slow to load)."""

    try:
        from bot.slack.charts import render_week_chart
        from pipelines.operations.daily_stats import daily_series
    except ImportError as exc:
        raise CliError(f"--chart is not available: {exc}") from None

    def render(gatehouse: Any, pipeline: str | None) -> bytes:
        series = daily_series(gatehouse.rt, days=7, pipeline=pipeline)
        title = f"{pipeline or 'All pipelines'}: last 7 days"
        return render_week_chart(series, title=title)

    return render


# -- rendering (pure) ----------------------------------------------------------------------------


def window_json(w: WindowStats) -> dict[str, Any]:
    return {
        "pipeline": w.pipeline,
        "since": w.since.isoformat(),
        "until": w.until.isoformat(),
        "runs": w.runs,
        "finished": w.finished,
        "errors": w.errors,
        "error_rate": w.error_rate,
        "by_status": w.by_status,
        "p50_seconds": w.p50_seconds,
        "p95_seconds": w.p95_seconds,
        "llm_cost_usd": w.llm_cost_usd,
        "llm_calls": w.llm_calls,
        "priced_llm_calls": w.priced_llm_calls,
        "cost_per_run": w.cost_per_run,
        "prompt_tokens": w.prompt_tokens,
        "completion_tokens": w.completion_tokens,
        "approvals": {
            "approved": w.approvals_approved,
            "rejected": w.approvals_rejected,
            "expired": w.approvals_expired,
            "median_decision_seconds": w.median_decision_seconds,
        },
        "runs_with_task": w.runs_with_task,
        "human_task_rate": w.human_task_rate,
    }


def report_json(report: StatsReport, window: timedelta) -> dict[str, Any]:
    pipelines = []
    for p in report.pipelines:
        w = p.window(window)
        if w is not None:
            pending = {"approvals": p.pending.approvals, "tasks": p.pending.tasks}
            pipelines.append({**window_json(w), "pending": pending})
    return {
        "now": report.now.isoformat(),
        "window_seconds": window.total_seconds(),
        "pipelines": pipelines,
        "overall": window_json(report.overall(window)),
    }


def _cells(w: WindowStats) -> list[str]:
    from bot.formatting import duration, money, rate

    return [
        w.pipeline,
        str(w.runs),
        rate(w.error_rate),
        duration(w.p50_seconds),
        duration(w.p95_seconds),
        money(w.cost_per_run, partial=w.priced_llm_calls < w.llm_calls),
        f"{w.prompt_tokens}+{w.completion_tokens}" if w.tokens else "-",
        f"{w.approvals_approved}/{w.approvals_rejected}/{w.approvals_expired}",
        duration(w.median_decision_seconds),
        rate(w.human_task_rate),
    ]


def table_lines(report: StatsReport, window: timedelta) -> list[str]:
    from bot.formatting import window_label

    """A header, one row per pipeline with runs (or asked for), and the overall row."""
    found = [w for p in report.pipelines if (w := p.window(window)) is not None]
    shown = [w for w in found if w.runs or w.finished] or found[:1]
    rows = [COLUMNS, *(_cells(w) for w in shown)]
    if len(found) > 1:
        rows.append(_cells(report.overall(window)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [f"last {window_label(window)} to {report.now:%Y-%m-%d %H:%M} UTC"]
    for r in rows:
        lines.append(
            "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
    if not any(w.runs or w.finished for w in found):
        lines.append("no runs in this window")
    lines.append("err: failed + needs_attention over finished; tokens: prompt+completion;")
    lines.append("decide: median time to an approval decision; tasks: runs that asked a person")
    return lines


def drift_json(figures: dict[str, DriftFigures]) -> list[dict[str, Any]]:
    return [f.to_json() for _name, f in sorted(figures.items())]


def drift_lines(figures: dict[str, DriftFigures]) -> list[str]:
    from bot.formatting import rate

    """The quiet failures per pipeline: human exits and mean confidence of the window's LLM
    calls, and the largest PSI from the last hourly drift check (none: nothing to show)."""
    if not figures:
        return []
    header = ["pipeline", "llm calls", "human exits", "confidence", "max PSI", "field"]
    rows = [header]
    for _name, f in sorted(figures.items()):
        rows.append(
            [
                f.pipeline,
                str(f.llm_calls),
                rate(f.human_exit_rate),
                "-" if f.mean_confidence is None else f"{f.mean_confidence:.2f}",
                "-" if f.max_psi is None else f"{f.max_psi:.2f}",
                f.max_psi_field or (f"({f.max_psi_reason})" if f.max_psi_reason else "-"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["", "quiet failures (LLM calls in the window; PSI: last 7 days vs the 28 before):"]
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(widths[i]) if i in (0, 5) else c.rjust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
    return lines


BUDGET_MARKS = {"ok": "", "near": "  (near)", "over": "  (reached)"}


def budget_lines(statuses: list[BudgetStatus]) -> list[str]:
    """Each budgeted pipeline's limits and what is left today (UTC); none: nothing to show."""
    if not statuses:
        return []
    width = max(len(s.pipeline) for s in statuses)
    lines = ["", "budgets (USD; a day is a UTC day; unpriced calls: spend unknown):"]
    for s in statuses:
        lines.append(f"{s.pipeline.ljust(width)}  {s.summary()}{BUDGET_MARKS[s.state]}")
    return lines
