"""`gatehouse eval PIPELINE` (run a pipeline on a test set, no side effects, and report) and
`gatehouse evals` (the stored evals, newest first).

Mounted by `bot.cli`. The report is a terminal table by default, `--json` on stdout, and
`--junit FILE` writes JUnit XML beside either. The exit status is 1 when the pass rate is below
`--min-pass`, so CI can gate a prompt or model change on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.session import JsonFlag, open_gatehouse, print_json, say, settings_for_cli

if TYPE_CHECKING:
    from pipelines.evaluation import CaseResult, EvalReport

FAILURES_SHOWN = 20


def confusion_lines(name: str, matrix: dict[str, Any]) -> list[str]:
    from bot.cli.tables import table

    labels = list(matrix["labels"])
    for row in matrix["matrix"].values():  # values outside the schema still get a column
        labels += [label for label in row if label not in labels]
    labels += [label for label in matrix["matrix"] if label not in labels]
    rows = [
        [want, *[str(matrix["matrix"].get(want, {}).get(got, 0)) for got in labels]]
        for want in labels
        if want in matrix["matrix"]
    ]
    return [f"confusion: {name} (rows expected, columns actual)"] + [
        "  " + line for line in table(["expected", *labels], rows)
    ]


def failure_lines(result: CaseResult) -> list[str]:
    from bot.cli.render import compact

    head = f"  line {result.position}" + (f" ({result.note})" if result.note else "")
    lines = [f"{head}: {result.status}"]
    for name, d in result.diff.items():
        lines.append(f"      {name}: expected {compact(d['expected'])}, got {compact(d['actual'])}")
    lines += [f"      {problem}" for problem in result.call_problems]
    if result.error:
        lines.append(f"      error: {result.error}")
    for call in result.would_calls:
        lines.append(f"      would call {call['tool']}({compact(call['args'])})")
    return lines


def report_lines(report: EvalReport) -> list[str]:
    from bot.formatting import milliseconds, rate, usd

    s = report.summary()
    total = s["cases"]
    lines = [
        f"eval {report.eval_id} of {report.pipeline} on {report.dataset}: {total} case(s), "
        f"model {report.model or 'none (LLM steps take the human exit)'}; no production state "
        "was written and no side effect ran"
    ]
    if s["skipped"]:
        lines.append(f"  ({s['skipped']} case(s) of other pipelines left out)")
    failed = s["failed"] + s["errors"]
    lines += [
        f"  passed  {s['passed']:>5}  {rate(s['pass_rate'])}",
        f"  failed  {failed:>5}  {rate(s['failure_rate'])}"
        + (f"  ({s['errors']} error(s))" if s["errors"] else ""),
        f"  human   {s['human']:>5}  {rate(s['human_rate'])}",
        f"  cost    {usd(s['cost_usd'])} in all, {usd(s['cost_per_case_usd'])} a case",
        f"  latency p50 {milliseconds(s['latency_ms']['p50'])}, "
        f"p95 {milliseconds(s['latency_ms']['p95'])} a case; "
        f"{s['wall_seconds']:.2f} s in all",
    ]
    for name, matrix in s["confusion"].items():
        lines += confusion_lines(name, matrix)
    failures = report.failures
    if failures:
        lines.append(f"failing cases ({len(failures)}):")
        for result in failures[:FAILURES_SHOWN]:
            lines += failure_lines(result)
        if len(failures) > FAILURES_SHOWN:
            lines.append(f"  … {len(failures) - FAILURES_SHOWN} more (--json shows every one)")
    if report.min_pass is not None:
        verdict = "passed" if report.gate_passed else "FAILED"
        lines.append(
            f"gate: pass rate {rate(report.pass_rate)} against --min-pass "
            f"{rate(report.min_pass)}: {verdict}"
        )
    return lines


def eval_command(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to evaluate.")],
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            "-d",
            help="The test set (JSONL). Default: PIPELINE.jsonl in GATEHOUSE_EVAL_DATASETS_DIR, "
            "else the example set in pipelines/catalog/datasets/.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=64, help="Cases at once.")
    ] = 4,
    min_pass: Annotated[
        float | None,
        typer.Option("--min-pass", min=0.0, max=1.0, help="Exit 1 below this pass rate (0..1)."),
    ] = None,
    as_json: JsonFlag = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write JUnit XML to this file.")
    ] = None,
) -> None:
    """Run PIPELINE on every case of a test set with no side effects, score and report.

    Read tools run; write/send/spend tools never do (their calls are reported as "would call");
    LLM steps call the configured model. The eval is stored (`gatehouse evals`)."""
    from pipelines.evaluation import dataset_path, evaluate, junit_xml, load_dataset

    settings = settings_for_cli()
    with open_gatehouse(quiet=True, settings=settings) as gatehouse:
        path = dataset or dataset_path(pipeline, settings.eval_datasets_dir)
        cases = load_dataset(path, pipeline=pipeline)
        report = evaluate(gatehouse.rt, pipeline, cases, concurrency=concurrency, min_pass=min_pass)
    if junit is not None:
        junit.write_text(junit_xml(report), encoding="utf-8")
    if as_json:
        print_json(report.to_json())
    else:
        say(report_lines(report))
        if junit is not None:
            typer.echo(f"JUnit XML written to {junit}")
    if not report.gate_passed:
        raise typer.Exit(1)


def evals_command(
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Stored evals, newest first (kept apart from runs: never in stats, alerts or review)."""
    from bot.cli.tables import table
    from bot.formatting import rate, usd
    from pipelines.evaluation import list_evals

    with open_gatehouse(quiet=True) as gatehouse:
        found = list_evals(gatehouse.rt, pipeline=pipeline, limit=limit)
    if as_json:
        print_json([e.to_json() for e in found])
        return
    if not found:
        typer.echo("no evals yet; `gatehouse eval PIPELINE --dataset FILE` runs one")
        return
    rows = [
        [
            e.id,
            e.pipeline,
            e.started_at.strftime("%Y-%m-%d %H:%M"),
            e.status,
            str(e.cases),
            rate(e.pass_rate),
            str(e.failed),
            str(e.human),
            usd(e.cost_usd),
            e.model or "-",
            Path(e.dataset).name,
        ]
        for e in found
    ]
    headers = ["eval", "pipeline", "started", "status", "cases", "pass", "fail", "human", "cost"]
    say(table([*headers, "model", "dataset"], rows))
