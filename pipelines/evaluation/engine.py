"""`evaluate`: run a pipeline on every case of a test set, score the cases, store the eval.

Cases run concurrently on a thread pool (`concurrency`), each through an eval context on a
runtime whose database is the production one opened read-only and whose outbox is off. The
eval's own rows (`evals`, `eval_cases`) are the only writes, made on the production handle at
the start and the end.
"""

from __future__ import annotations

import secrets
import time
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from pipelines import sensitive
from pipelines.authorization import authorize_operator
from pipelines.errors import UnknownPipeline
from pipelines.evaluation.comparators import diff_calls, diff_output, registered_comparators
from pipelines.evaluation.context import CaseStopped, eval_context
from pipelines.evaluation.dataset import Case, Dataset
from pipelines.evaluation.readonly import ReadOnlyDatabase
from pipelines.evaluation.report import CaseResult, EvalReport, confusion, enum_fields
from pipelines.journal import record_value
from pipelines.pipeline import Pipeline, get_pipeline
from pipelines.ports import SilentNotifier
from pipelines.runtime import Runtime, running_in
from pipelines.validation import format_validation_errors
from storage import evals as eval_rows
from storage.db import Database

log = structlog.get_logger()


def output_type(pipeline: Pipeline) -> Any:
    """The pipeline's declared return type (None without an annotation)."""
    try:
        return typing.get_type_hints(pipeline.fn).get("return")
    except Exception:
        return None


def output_schema(pipeline_name: str | None) -> dict[str, Any] | None:
    """The JSON schema of a pipeline's declared output model (None: unknown pipeline, or an
    output that is not a pydantic model): what the weekly review's Flag form is built from."""
    if not pipeline_name:
        return None
    try:
        declared = output_type(get_pipeline(pipeline_name))
    except UnknownPipeline:
        return None
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return declared.model_json_schema()
    return None


def eval_runtime(rt: Runtime, db: Database) -> Runtime:
    """The production runtime's clock and model, on `db`, telling nobody anything."""
    return Runtime(
        db=db,
        clock=rt.clock,
        notifier=SilentNotifier(),
        directory=rt.directory,
        worker_id=f"eval:{rt.worker_id}",
        lease=rt.lease,
        llm_config=rt.llm_config,
        authorization=rt.authorization,
        outbox=False,
        _llm_caller=rt.llm,  # one SDK client and response-format cache for every case
    )


def run_case(
    rt: Runtime, pipeline: Pipeline, case: Case, *, eval_id: str, fields: dict[str, Any]
) -> CaseResult:
    """One case, start to score. Never raises for what the pipeline does."""
    result = CaseResult(
        position=case.line, status="error", input=case.input, expected=case.expected, note=case.note
    )
    began = time.perf_counter()
    ctx, trace = eval_context(rt, case_id=f"{eval_id}:{case.line}", pipeline=pipeline.name)
    with running_in(rt), sensitive.tracking():
        try:
            model = pipeline.input_model.model_validate(case.input)
        except ValidationError as exc:
            result.error = f"invalid input for {pipeline.name}: {format_validation_errors(exc)}"
        else:
            sensitive.remember_model(model)
            try:
                value = pipeline.fn(ctx, model)
                result.output = sensitive.mask(record_value(value, f"pipeline {pipeline.name!r}"))
                result.finished = True
            except CaseStopped as stop:
                result.stopped = stop.reason
                result.status = "human" if stop.outcome == "human" else "failed"
            except Exception as exc:
                result.error = sensitive.scrub(f"{type(exc).__name__}: {exc}")
        result.would_calls = sensitive.mask(sensitive.scrub(trace.would_calls))
    result.calls = trace.calls
    result.cost_usd = trace.cost_usd
    result.llm_ms = trace.llm_ms
    result.latency_ms = (time.perf_counter() - began) * 1000
    if result.error is None and result.status != "human":
        _score(result, case, fields)
    return result


def _score(result: CaseResult, case: Case, fields: dict[str, Any]) -> None:
    if case.expected is not None:
        if result.finished:
            result.diff = diff_output(case.expected, result.output, fields)
        else:
            result.diff = {
                "(output)": {"expected": case.expected, "actual": f"none: {result.stopped}"}
            }
    if case.expect_calls is not None:
        result.call_problems = diff_calls(case.expect_calls, result.would_calls)
    result.status = "failed" if result.diff or result.call_problems else "passed"


def evaluate(
    rt: Runtime,
    pipeline_name: str,
    dataset: Dataset,
    *,
    concurrency: int = 4,
    min_pass: float | None = None,
    user: str | None = None,
    source: str = "cli",
    store: bool = True,
    on_case: Callable[[CaseResult], None] | None = None,
) -> EvalReport:
    """Run every case of `dataset` through `pipeline_name` with no side effects and report.
    `user`: who asks from Slack (an operator, like replay); None for a local operator."""
    pipeline = get_pipeline(pipeline_name)
    authorize_operator(rt, user, "evaluate", pipeline_name)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    eval_id = f"eval_{secrets.token_hex(8)}"
    started = rt.clock.now()
    report = EvalReport(
        eval_id=eval_id,
        pipeline=pipeline_name,
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        model=rt.llm_config.model if rt.llm_config.configured else None,
        started_at=started.isoformat(),
        min_pass=min_pass,
        skipped=dataset.skipped,
    )
    if store:
        with rt.db.transaction() as conn:
            eval_rows.insert_eval(
                conn,
                eval_id=eval_id,
                pipeline=pipeline_name,
                dataset=dataset.name,
                dataset_hash=dataset.sha256,
                model=report.model,
                started_at=started,
                min_pass=min_pass,
                triggered_by=user,
                source=source,
            )
    fields = registered_comparators(pipeline_name)
    reader = ReadOnlyDatabase(rt.db, pool_size=min(concurrency, 16))
    runtime = eval_runtime(rt, reader)
    began = time.perf_counter()
    log.info("eval.started", eval_id=eval_id, pipeline=pipeline_name, cases=len(dataset.cases))
    try:

        def one(case: Case) -> CaseResult:
            outcome = run_case(runtime, pipeline, case, eval_id=eval_id, fields=fields)
            if on_case is not None:
                on_case(outcome)
            return outcome

        if concurrency == 1 or len(dataset.cases) <= 1:
            report.results = [one(case) for case in dataset.cases]
        else:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="gatehouse-eval") as pool:
                report.results = list(pool.map(one, dataset.cases))
    except BaseException:
        if store:
            _finish(rt, report, eval_rows.FAILED, rt.clock.now())
        raise
    finally:
        reader.dispose()
    report.wall_seconds = time.perf_counter() - began
    report.confusion = confusion(report.results, enum_fields(output_type(pipeline)))
    finished = rt.clock.now()
    report.finished_at = finished.isoformat()
    if store:
        _finish(rt, report, eval_rows.FINISHED, finished)
    log.info(
        "eval.finished",
        eval_id=eval_id,
        pipeline=pipeline_name,
        cases=report.total,
        pass_rate=report.pass_rate,
    )
    return report


def _finish(rt: Runtime, report: EvalReport, status: str, now: datetime) -> None:
    with rt.db.transaction() as conn:
        eval_rows.insert_cases(conn, report.eval_id, [r.row() for r in report.results])
        eval_rows.finish_eval(
            conn,
            report.eval_id,
            status=status,
            finished_at=now,
            cases=report.total,
            passed=report.count("passed"),
            failed=report.count("failed") + report.count("error"),
            human=report.count("human"),
            cost_usd=report.cost_usd,
            report=report.summary(),
        )


def list_evals(rt: Runtime, *, pipeline: str | None = None, limit: int = 20) -> list[Any]:
    with rt.db.transaction() as conn:
        return eval_rows.list_evals(conn, pipeline=pipeline, limit=limit)


def get_eval(rt: Runtime, eval_id: str) -> tuple[Any, Any, list[Any]] | None:
    """(summary, report, case rows), or None."""
    with rt.db.transaction() as conn:
        found = eval_rows.fetch_eval(conn, eval_id)
        if found is None:
            return None
        return found[0], found[1], eval_rows.eval_cases(conn, eval_id)
