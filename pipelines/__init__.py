"""Gatehouse's engine: durable pipelines with recorded steps, gated tools and human tasks.

The public API (users script against it; keep it stable):

    from pipelines import pipeline, tool, when, Context, ActionRejected, CannotAnswer, trigger

`Gatehouse` bundles a database, a clock and the notifier/directory ports for code that needs
more than `trigger()` (the CLI, the bot, tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# `pipeline` and `validator` are both a submodule and the decorator it defines: bound here, after
# their submodules are imported, so that a later import of the submodule cannot shadow them.
from pipelines.pipeline import pipeline
from pipelines.validator import validator

if TYPE_CHECKING:
    from pipelines.authorization import Authorization
    from pipelines.budget_limits import Budget
    from pipelines.budgets import BudgetExceeded, RunRateExceeded
    from pipelines.categorical import Categorical
    from pipelines.config import Settings
    from pipelines.context import Context
    from pipelines.errors import (
        ActionRejected,
        CannotAnswer,
        GatehouseError,
        StepFailed,
        ToolFailed,
    )
    from pipelines.evaluation import Dataset, EvalReport
    from pipelines.llm import LLMConfig, Price
    from pipelines.pauses import (
        PauseView,
        PipelinePaused,
        is_paused,
        pause_pipeline,
        paused_pipelines,
        pipeline_pause,
        resume_pipeline,
    )
    from pipelines.pipeline import Pipeline, discover, get_pipeline, registered_pipelines
    from pipelines.ports import (
        ApproverDirectory,
        Clock,
        Notifier,
        SilentNotifier,
        StaticDirectory,
        SystemClock,
    )
    from pipelines.replay import ReplayReport
    from pipelines.runtime import current_clock, current_database
    from pipelines.sensitive import Sensitive
    from pipelines.tools import Tool, registered_tools, tool, when
    from pipelines.triggers import cron, every, webhook
    from pipelines.views import ApprovalView, CallView, Run, TaskView
    from pipelines.worker import Worker
    from storage.db import Database

# Where each public name lives. They are imported on first use (PEP 562), so that importing one
# submodule, or `from pipelines import Run`, does not import the whole engine: a one-shot CLI
# command pays only for what it uses (tests/test_cli_startup.py).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["ActionRejected", "CannotAnswer", "GatehouseError", "StepFailed", "ToolFailed"], "errors"
    ),
    **dict.fromkeys(["ApprovalView", "CallView", "Run", "TaskView"], "views"),
    **dict.fromkeys(
        ["ApproverDirectory", "Clock", "Notifier", "SilentNotifier", "StaticDirectory"], "ports"
    ),
    "SystemClock": "ports",
    "Authorization": "authorization",
    "Budget": "budget_limits",
    "BudgetExceeded": "budgets",
    "RunRateExceeded": "budgets",
    "Categorical": "categorical",
    "Context": "context",
    "LLMConfig": "llm",
    "Price": "llm",
    **dict.fromkeys(
        ["PauseView", "PipelinePaused", "is_paused", "pause_pipeline", "paused_pipelines"],
        "pauses",
    ),
    "pipeline_pause": "pauses",
    "resume_pipeline": "pauses",
    **dict.fromkeys(["Pipeline", "discover", "get_pipeline", "registered_pipelines"], "pipeline"),
    "ReplayReport": "replay",
    "Sensitive": "sensitive",
    "Settings": "config",
    **dict.fromkeys(["Tool", "registered_tools", "tool", "when"], "tools"),
    "Validator": "validator",
    "Worker": "worker",
    **dict.fromkeys(["cron", "every", "webhook"], "triggers"),
    "current_clock": "runtime",
    "current_database": "runtime",
}
# Submodules `import pipelines` used to bind as attributes (pipelines.runner, ...).
_SUBMODULES = frozenset(
    ["approvals", "inspect", "reversal", "run_operations", "runner", "sensitive", "tasks"]
)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"pipelines.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"pipelines.{name}")
    else:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


__all__ = [
    "ActionRejected",
    "ApprovalView",
    "ApproverDirectory",
    "Authorization",
    "Budget",
    "BudgetExceeded",
    "CallView",
    "CannotAnswer",
    "Categorical",
    "Clock",
    "Context",
    "Gatehouse",
    "GatehouseError",
    "LLMConfig",
    "Notifier",
    "PauseView",
    "Pipeline",
    "PipelinePaused",
    "Price",
    "ReplayReport",
    "Run",
    "RunRateExceeded",
    "Sensitive",
    "Settings",
    "SilentNotifier",
    "StaticDirectory",
    "StepFailed",
    "SystemClock",
    "TaskView",
    "Tool",
    "ToolFailed",
    "Validator",
    "Worker",
    "cron",
    "current_clock",
    "current_database",
    "discover",
    "every",
    "get_pipeline",
    "is_paused",
    "pause_pipeline",
    "paused_pipelines",
    "pipeline",
    "pipeline_pause",
    "registered_pipelines",
    "registered_tools",
    "resume_pipeline",
    "tool",
    "trigger",
    "validator",
    "webhook",
    "when",
]


class Gatehouse:
    """The engine bound to one database and its ports."""

    def __init__(
        self,
        database: Database | str,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        directory: ApproverDirectory | None = None,
        worker_id: str | None = None,
        lease: timedelta = timedelta(minutes=5),
        llm: LLMConfig | None = None,
        authorization: Authorization | None = None,
        budgets: Mapping[str, Budget] | None = None,
    ) -> None:
        from pipelines import sensitive, tracing
        from pipelines.authorization import Authorization
        from pipelines.llm import LLMConfig
        from pipelines.logs import ensure_redaction, remember_secrets
        from pipelines.ports import SilentNotifier, StaticDirectory, SystemClock
        from pipelines.runtime import Runtime, new_worker_id
        from storage.db import Database

        db = Database(database) if isinstance(database, str) else database
        sensitive.configure(None, db.url)  # the database's key, unless GATEHOUSE_SECRET_KEY is set
        # Built in code, without settings or configure_logging: its secrets stay out of records
        # and logs all the same.
        remember_secrets([llm.api_key if llm else None])
        ensure_redaction()
        tracing.install_from_environment()  # OTEL_* set: runs export traces (pipelines/tracing.py)
        self.rt = Runtime(
            db=db,
            clock=clock or SystemClock(),
            notifier=notifier or SilentNotifier(),
            directory=directory or StaticDirectory(),
            worker_id=worker_id or new_worker_id(),
            lease=lease,
            llm_config=llm or LLMConfig(),
            authorization=authorization or Authorization(),
            budgets=dict(budgets or {}),
        )
        # None: the worker's own defaults (pipelines.worker, imported only when a worker is made).
        self.worker_batch_size: int | None = None
        self.worker_batch_seconds: float | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        notifier: Notifier | None = None,
        directory: ApproverDirectory | None = None,
        clock: Clock | None = None,
        upgrade: bool = True,
        open_by_default: bool = True,
    ) -> Gatehouse:
        """`open_by_default`: what an empty list of who may act means (pipelines.authorization);
        `gatehouse serve` against a real Slack passes False."""
        import structlog

        from pipelines import sensitive
        from pipelines.authorization import Authorization
        from pipelines.budgets import overrides_from_settings
        from pipelines.config import load_settings
        from pipelines.directory import NO_SLACK_HERE, approver_directory
        from pipelines.llm import llm_config_from
        from pipelines.logs import configure_logging, remember_secrets, settings_secrets
        from pipelines.pipeline import discover
        from storage.audit import use_audit_key
        from storage.db import Database

        settings = settings or load_settings()
        remember_secrets(settings_secrets(settings), keys=settings.log_redact_keys)
        key = settings.secret_key.get_secret_value() if settings.secret_key else None
        sensitive.configure(key, settings.database_url)
        if not structlog.is_configured():
            configure_logging(settings.log_format, settings.log_level)
        registered = discover(settings.pipeline_modules)
        budgets = overrides_from_settings(settings.budgets, registered)
        db = Database(settings.database_url)
        if upgrade:
            db.upgrade()
        use_audit_key(db, settings.audit_key.get_secret_value() if settings.audit_key else None)
        engine = cls(
            db,
            notifier=notifier,
            # One directory for Slack and the CLI alike: GATEHOUSE_GROUPS and, where this
            # process can ask it, the workspace's user groups (pipelines/directory.py).
            directory=approver_directory(
                settings.groups,
                directory,
                no_workspace=NO_SLACK_HERE
                if settings.slack_bot_token is None
                else "this engine was built without them (Gatehouse.from_settings(directory=...))",
            ),
            clock=clock,
            lease=timedelta(seconds=settings.run_lease_seconds),
            llm=llm_config_from(settings),
            authorization=Authorization(
                triggerers=settings.triggerers or {},
                operators=settings.operators or (),
                open_by_default=open_by_default,
            ),
            budgets=budgets,
        )
        engine.rt.tell_triggerers = settings.tell_triggerer
        engine.worker_batch_size = settings.worker_batch_size
        engine.worker_batch_seconds = settings.worker_batch_seconds
        return engine

    @property
    def db(self) -> Database:
        return self.rt.db

    def trigger(
        self,
        name: str,
        input: Any,
        *,
        user: str | None = None,
        source: str = "api",
        run_here: bool = True,
    ) -> Run:
        from pipelines import runner

        return runner.trigger(self.rt, name, input, user=user, source=source, run_here=run_here)

    def resume(self, run_id: str) -> Run | None:
        """Claim a queued run and execute it here; None when it is not queued (another process
        has it, or it is waiting or finished); UnknownRun when no run has this id."""
        from pipelines import inspect, runner

        outcome = runner.claim_and_execute(self.rt, run_id)
        run = inspect.get_run(self.rt, run_id)
        return None if outcome is None else run

    def approve(
        self,
        approval_id: str,
        *,
        user: str,
        reason: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> ApprovalView:
        """`args`: edited arguments of an `@tool(editable=...)` call (pipelines/approval_edits.py)."""
        from pipelines import approvals

        return approvals.decide(
            self.rt, approval_id, user=user, approve=True, reason=reason, edited_args=args
        )

    def reject(self, approval_id: str, *, user: str, reason: str) -> ApprovalView:
        from pipelines import approvals

        return approvals.decide(self.rt, approval_id, user=user, approve=False, reason=reason)

    def answer(self, task_id: str, *, user: str, answer: Any) -> TaskView:
        from pipelines import tasks

        return tasks.answer(self.rt, task_id, user=user, answer=answer)

    def undo(self, call_id: str, *, user: str) -> CallView:
        from pipelines import reversal

        return reversal.undo(self.rt, call_id, user=user)

    def cancel(self, run_id: str, *, user: str, reason: str) -> Run:
        """End a queued, waiting, running or needs_attention run (`pipelines.run_operations`)."""
        from pipelines import run_operations

        run_operations.cancel(self.rt, run_id, user=user, reason=reason)
        return self.run(run_id)

    def retry(self, run_id: str, *, user: str) -> Run:
        """Queue a new attempt of a failed, needs_attention or cancelled run (run it with
        `resume`, or leave it to a worker)."""
        from pipelines import run_operations

        run_operations.retry(self.rt, run_id, user=user)
        return self.run(run_id)

    def resolve(
        self, call_id: str, *, user: str, happened: bool, reason: str, result: Any = None
    ) -> CallView:
        """Settle an `outcome_unknown` call; its stuck run is queued to carry on."""
        from pipelines import run_operations

        return run_operations.resolve(
            self.rt, call_id, user=user, happened=happened, reason=reason, result=result
        )

    def replay(self, run_id: str, *, fresh: bool = False, user: str | None = None) -> ReplayReport:
        """Re-execute on the record with no side effects; `fresh` asks the model again. `user`
        must be an operator when operators are configured (None: a local operator, the CLI)."""
        from pipelines.replay import replay

        return replay(self.rt, run_id, fresh=fresh, user=user)

    def export_reviewed(
        self, *, since: datetime, flagged_only: bool, user: str | None = None
    ) -> list[dict[str, Any]]:
        """Reviewed runs as test cases (`gatehouse review export`); operators only, like replay."""
        from pipelines.authorization import authorize_operator
        from pipelines.operations.review import reviewed_cases

        what = "flagged runs" if flagged_only else "reviewed runs"
        authorize_operator(self.rt, user, "export", what)
        return reviewed_cases(self.rt, since=since, flagged_only=flagged_only)

    def evaluate(
        self,
        name: str,
        dataset: str | Path | Dataset,
        *,
        concurrency: int = 4,
        min_pass: float | None = None,
        user: str | None = None,
    ) -> EvalReport:
        """Run `name` on every case of a test set (a JSONL path or a parsed `Dataset`) with no
        side effects, score and store it (`gatehouse eval`; see `pipelines.evaluation`)."""
        from pipelines.evaluation import Dataset, evaluate, load_dataset

        cases = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, pipeline=name)
        return evaluate(self.rt, name, cases, concurrency=concurrency, min_pass=min_pass, user=user)

    def run(self, run_id: str) -> Run:
        from pipelines import inspect

        return inspect.get_run(self.rt, run_id)

    def task(self, task_id: str) -> TaskView:
        from pipelines import inspect

        return inspect.get_task(self.rt, task_id)

    def approval(self, approval_id: str) -> ApprovalView:
        from pipelines import inspect

        return inspect.get_approval(self.rt, approval_id)

    def runs(self, **filters: Any) -> list[Run]:
        from pipelines import inspect

        return inspect.list_runs(self.rt, **filters)

    def pending(self) -> list[ApprovalView | TaskView]:
        from pipelines import inspect

        return inspect.pending(self.rt)

    def worker(self, *, poll_seconds: float = 0.5, batch_size: int | None = None) -> Worker:
        """A worker on this engine; `batch_size` defaults to GATEHOUSE_WORKER_BATCH_SIZE for an
        engine built from settings (8 otherwise)."""
        from pipelines.worker import DEFAULT_BATCH_SECONDS, DEFAULT_BATCH_SIZE, Worker

        return Worker(
            self.rt,
            poll_seconds=poll_seconds,
            batch_size=batch_size or self.worker_batch_size or DEFAULT_BATCH_SIZE,
            batch_seconds=DEFAULT_BATCH_SECONDS
            if self.worker_batch_seconds is None
            else self.worker_batch_seconds,
        )

    def expire_due(self) -> list[ApprovalView]:
        from pipelines import approvals

        return approvals.expire_due(self.rt)

    def pause_pipeline(self, name: str, *, user: str | None, reason: str) -> bool:
        """Pause `name` for everyone (operators only, when operators are configured; None: a
        local operator, the CLI without --as): True if it was running."""
        from pipelines.authorization import authorize_operator
        from pipelines.pauses import pause_pipeline

        authorize_operator(self.rt, user, "pause", name)
        return pause_pipeline(self.rt, name, by=user or "cli", reason=reason)

    def resume_pipeline(self, name: str, *, user: str | None, reason: str | None = None) -> bool:
        """Resume `name` and queue the runs its pause held (operators only): True if paused."""
        from pipelines.authorization import authorize_operator
        from pipelines.pauses import resume_pipeline

        authorize_operator(self.rt, user, "resume", name)
        return resume_pipeline(self.rt, name, by=user or "cli", reason=reason)

    def pipeline_pause(self, name: str) -> PauseView | None:
        from pipelines.pauses import pipeline_pause

        return pipeline_pause(self.rt, name)

    def paused_pipelines(self) -> dict[str, PauseView]:
        from pipelines.pauses import paused_pipelines

        return paused_pipelines(self.rt)


_default: Gatehouse | None = None


def default_gatehouse() -> Gatehouse:
    """The engine configured from the environment (GATEHOUSE_*), created on first use."""
    global _default
    if _default is None:
        _default = Gatehouse.from_settings()
    return _default


def trigger(name: str, input: Any, *, user: str | None = None) -> Run:
    """Create a run and execute it in this process until it finishes or waits."""
    return default_gatehouse().trigger(name, input, user=user)
