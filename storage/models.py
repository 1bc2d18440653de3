"""The tables: runs and their transitions, recorded calls, approvals, human tasks, the audit log.

Status values (storage.statuses) are `StrEnum`s so the engine, the CLI and the bot share one
spelling. Indexes are chosen for the queries that run on millions of rows: runs by pipeline and
time, by status (the worker's claim), by finish time (stats, review); audit by tool and time
(rate limits).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The statuses live in storage.statuses (no ORM there); the rest of the code names them here.
from storage.statuses import (
    FINISHED_RUN_STATUSES as FINISHED_RUN_STATUSES,
)
from storage.statuses import (
    ApprovalStatus as ApprovalStatus,
)
from storage.statuses import (
    CallKind as CallKind,
)
from storage.statuses import (
    CallStatus as CallStatus,
)
from storage.statuses import (
    RunStatus as RunStatus,
)
from storage.statuses import (
    TaskStatus as TaskStatus,
)
from storage.types import JSONValue, SafeText, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONValue, Any: JSONValue}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    input: Mapped[Any] = mapped_column(nullable=True)
    output: Mapped[Any] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(SafeText)
    trigger_user: Mapped[str | None] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(200), default="api")
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    wake_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_runs_pipeline_created", "pipeline", "created_at"),
        Index("ix_runs_status_wake", "status", "wake_at"),
        Index("ix_runs_created", "created_at"),
        # Covering for windowed error rates per pipeline (alerts, stats): no table lookups; it
        # also serves every query on `finished_at` alone (no index of its own: 0022).
        Index("ix_runs_finished_pipeline_status", "finished_at", "pipeline", "status"),
    )


class RunEvent(Base):
    """One row per state transition, so `waiting ↔ queued` cycles keep every timestamp."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(SafeText)

    __table_args__ = (Index("ix_run_events_run", "run_id", "id"),)


class Call(Base):
    """A recorded `ctx` call. `seq` is its position in the run (NULL for out-of-band reversals)."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    input: Mapped[Any] = mapped_column(nullable=True)
    output: Mapped[Any] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(SafeText)
    idempotency_key: Mapped[str | None] = mapped_column(String(400))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    wake_at: Mapped[datetime | None]
    reversed_by: Mapped[str | None] = mapped_column(String(40))
    # Call-kind specifics: for an LLM call the model, attempts, tokens, cost, confidence.
    meta: Mapped[Any] = mapped_column(nullable=True)

    __table_args__ = (
        # Its index is the one the run's record is read through (no second one on the same
        # columns: 0022).
        UniqueConstraint("run_id", "seq", name="uq_calls_run_seq"),
    )


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(String(40), unique=True)
    call_key: Mapped[str] = mapped_column(String(300))
    tool: Mapped[str] = mapped_column(String(200))
    tool_kind: Mapped[str] = mapped_column(String(20))
    args: Mapped[Any] = mapped_column(nullable=True)
    approvers: Mapped[Any] = mapped_column(nullable=True)
    four_eyes: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger_user: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    requested_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(SafeText)
    # The validation model's verdict when it handed the call to a person (`approval=validator`).
    validator: Mapped[Any] = mapped_column(nullable=True)
    # Approved with edits (`@tool(editable=…)`): who, when, the original arguments and each
    # field's old and new value (`args` then holds the edited ones).
    edited: Mapped[Any] = mapped_column(nullable=True)

    __table_args__ = (
        Index("ix_approvals_status_requested", "status", "requested_at"),
        Index("ix_approvals_status_expires", "status", "expires_at"),
        Index("ix_approvals_run", "run_id"),
    )


class HumanTask(Base):
    __tablename__ = "human_tasks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(String(40), unique=True)
    call_key: Mapped[str] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(SafeText)
    output_model: Mapped[str] = mapped_column(String(400))
    output_schema: Mapped[Any] = mapped_column(nullable=True)
    context: Mapped[Any] = mapped_column(nullable=True)
    assignees: Mapped[Any] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    opened_at: Mapped[datetime]
    answered_by: Mapped[str | None] = mapped_column(String(200))
    answered_at: Mapped[datetime | None]
    answer: Mapped[Any] = mapped_column(nullable=True)

    __table_args__ = (
        Index("ix_human_tasks_status_opened", "status", "opened_at"),
        Index("ix_human_tasks_run", "run_id"),
    )


class AuditEntry(Base):
    """Append-only and hash-chained: rows are inserted, never updated. Rate limits count
    `tool.started` rows."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(40))
    call_id: Mapped[str | None] = mapped_column(String(40))
    tool: Mapped[str | None] = mapped_column(String(200))
    approval_id: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(400))
    detail: Mapped[Any] = mapped_column(nullable=True)
    # The hash chain (storage/audit.py): the previous entry's hash, and this entry's.
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # "v1" plain SHA-256, "k1" HMAC-SHA256 with GATEHOUSE_AUDIT_KEY (migration 0014).
    hash_scheme: Mapped[str] = mapped_column(String(8), server_default="v1")

    __table_args__ = (
        Index("ix_audit_tool_event_at", "tool", "event", "at"),
        Index("ix_audit_run", "run_id"),
    )


class SlackMessage(Base):
    """Where a card was posted, so it can be updated in place (`chat.update` needs channel + ts;
    `response_url` expires after 30 minutes and 5 uses)."""

    __tablename__ = "slack_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # approval | task
    ref_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str] = mapped_column(String(40))
    posted_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("kind", "ref_id", name="uq_slack_messages_ref"),)


class ScheduleFire(Base):
    """One row per (schedule, fire time): the unique key makes each fire create one run, however
    many processes run the scheduler."""

    __tablename__ = "schedule_fires"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(300))
    fire_time: Mapped[datetime]
    claimed_by: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20), default="fired")  # fired | skipped | late
    reason: Mapped[str | None] = mapped_column(SafeText)  # why a fire was skipped, when known

    __table_args__ = (UniqueConstraint("schedule", "fire_time", name="uq_schedule_fires"),)


class ScheduleState(Base):
    """A schedule's pause switch (absent row: running)."""

    __tablename__ = "schedule_states"

    schedule: Mapped[str] = mapped_column(String(300), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_by: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[datetime]


class PipelinePause(Base):
    """A pipeline's circuit breaker (absent row: running). The row holds the latest switch;
    every pause and resume is in the audit log."""

    __tablename__ = "pipeline_pauses"

    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(SafeText)
    source: Mapped[str] = mapped_column(String(40), default="manual")
    changed_at: Mapped[datetime]


class WebhookDelivery(Base):
    """An accepted webhook delivery: retries with the same Idempotency-Key create no second run."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(300))
    body_sha256: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(40))
    received_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("pipeline", "idempotency_key", name="uq_webhook_deliveries"),
    )


class ReviewWeek(Base):
    """A weekly review: the stored pick makes a re-post or a retry post the same runs, once."""

    __tablename__ = "review_weeks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    week_start: Mapped[datetime] = mapped_column(unique=True)
    picked_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # picked | posting | posted | summarized
    channel: Mapped[str | None] = mapped_column(String(40))
    parent_ts: Mapped[str | None] = mapped_column(String(40))
    summary_ts: Mapped[str | None] = mapped_column(String(40))


class ReviewItem(Base):
    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    week_id: Mapped[int] = mapped_column(ForeignKey("review_weeks.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(40))
    reply_ts: Mapped[str | None] = mapped_column(String(40))
    verdict: Mapped[str | None] = mapped_column(String(20))  # looks_right | flagged
    category: Mapped[str | None] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(SafeText)
    expected: Mapped[Any] = mapped_column(nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("week_id", "position", name="uq_review_items_position"),
        UniqueConstraint("week_id", "run_id", name="uq_review_items_run"),
        Index("ix_review_items_verdict", "verdict", "reviewed_at"),
    )


class Alert(Base):
    """An alert of one rule (error_rate, human_exit_rate, confidence_drop, input_drift,
    output_drift) on one subject (a pipeline, one of its LLM calls, one of its fields). At most
    one open alert per (rule, subject) (a partial unique index), so each spike alerts once
    across replicas. `rate` is the rule's figure (a rate, a mean confidence, a PSI)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(40), server_default="error_rate")
    subject: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(20))  # open | recovered
    opened_at: Mapped[datetime]
    rate: Mapped[float]
    baseline: Mapped[float | None]
    window_runs: Mapped[int] = mapped_column(Integer)
    details: Mapped[Any] = mapped_column(nullable=True)
    channel: Mapped[str | None] = mapped_column(String(40))
    ts: Mapped[str | None] = mapped_column(String(40))
    below_since: Mapped[datetime | None]
    recovered_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_alerts_one_open",
            "rule",
            "subject",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_alerts_opened", "opened_at"),
    )


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up: a permanent error (a bad channel) after its attempts; logged loudly


class Outbox(Base):
    """What the bot must tell people (a card to post or update), written in the same transaction
    as the state change it reports, and delivered by a sender with retries: Slack being down or
    rate-limiting delays a card, never loses it. `subject_id` is the approval or task; the sender
    shows the subject's state at delivery time, so rows for one subject collapse into one."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(40))  # approval_requested | approval_decided | …
    subject_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(SafeText)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        # The sender's scan: pending rows by due time (a partial index stays small).
        Index(
            "ix_outbox_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_subject", "subject_id", "id"),
    )


class StatsRollup(Base):
    """The finished runs of one pipeline in one hour (`span_seconds` 3600) or one UTC day
    (86400): counts by final status and a latency histogram (`storage.latency`), plus the runs
    created in it. Written only by the roll-up (`storage.stats_rollups`), which recomputes a
    range from `runs` and replaces its rows: one row per (span, start, pipeline)."""

    __tablename__ = "stats_rollups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    span_seconds: Mapped[int] = mapped_column(Integer)
    bucket_start: Mapped[datetime]
    pipeline: Mapped[str] = mapped_column(String(200))
    created: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    invalid_input: Mapped[int] = mapped_column(Integer, default=0)
    needs_attention: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    latency_histogram: Mapped[str] = mapped_column(Text, default="")  # storage.latency.pack

    __table_args__ = (
        UniqueConstraint("span_seconds", "bucket_start", "pipeline", name="uq_stats_rollups"),
    )


class StatsRollupProgress(Base):
    """How far the rollups go: hours before `hours_until` and days before `days_until` are
    rolled. One row (`name` "runs"); a roll-up claims its range by moving it (compare-and-set)."""

    __tablename__ = "stats_rollup_progress"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    hours_until: Mapped[datetime | None]
    days_until: Mapped[datetime | None]
    rolled_by: Mapped[str | None] = mapped_column(String(200))
    rolled_at: Mapped[datetime | None]


class Eval(Base):
    """One `gatehouse eval`: a pipeline run over a test set with no side effects. Kept in its
    own tables: no metric, alert, stats roll-up or review pick reads them (they read `runs`)."""

    __tablename__ = "evals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(500))
    dataset_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running | finished | failed
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    cases: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    human: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None]
    min_pass: Mapped[float | None]
    triggered_by: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20), default="cli")
    report: Mapped[Any] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_evals_pipeline_started", "pipeline", "started_at"),)


class EvalCase(Base):
    """One case of an eval: what went in, what came out, what it would have called, the verdict."""

    __tablename__ = "eval_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # passed | failed | error | human
    input: Mapped[Any] = mapped_column(nullable=True)
    expected: Mapped[Any] = mapped_column(nullable=True)
    output: Mapped[Any] = mapped_column(nullable=True)
    would_calls: Mapped[Any] = mapped_column(nullable=True)
    diff: Mapped[Any] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(SafeText)
    note: Mapped[str | None] = mapped_column(SafeText)
    cost_usd: Mapped[float | None]
    latency_ms: Mapped[float]

    __table_args__ = (UniqueConstraint("eval_id", "position", name="uq_eval_cases_position"),)


class DriftFigure(Base):
    """The last hourly drift evaluation's PSI of one categorical field (`pipelines.operations.drift`), for
    the stats and App Home: replaced whole by each evaluation."""

    __tablename__ = "drift_figures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(400))  # input.FIELD, output.FIELD, llm KEY.FIELD
    psi: Mapped[float]
    reference_count: Mapped[int] = mapped_column(Integer)
    recent_count: Mapped[int] = mapped_column(Integer)
    figures: Mapped[Any] = mapped_column(nullable=True)
    evaluated_at: Mapped[datetime]

    __table_args__ = (Index("ix_drift_figures_pipeline", "pipeline", "psi"),)


class DriftCount(Base):
    """How many runs (or LLM answers) had one value of one categorical field on one UTC day:
    the daily roll-up the drift rule's PSI sums (`pipelines.operations.drift`), so the hourly check reads
    35 days of a few rows, not 35 days of runs. `call_key` is "" for a pipeline's own input or
    output. Inserted once per day (`DriftRolledDay` marks the days done)."""

    __tablename__ = "drift_counts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[datetime]
    pipeline: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20))  # input | output | llm
    call_key: Mapped[str] = mapped_column(String(300))
    field: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(400))
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint(
            "day", "pipeline", "source", "call_key", "field", "value", name="uq_drift_counts"
        ),
    )


class DriftRolledDay(Base):
    """A UTC day whose drift counts are all in `drift_counts`."""

    __tablename__ = "drift_rolled_days"

    day: Mapped[datetime] = mapped_column(primary_key=True)
    rolled_at: Mapped[datetime]


class SeenSignature(Base):
    """A signed request accepted once: its signature's hash, kept until the signature's own
    window closes (after that the timestamp check refuses it anyway). Replicas share the table,
    so a replay sent to another replica is caught too."""

    __tablename__ = "seen_signatures"

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)  # "slack", "webhook:NAME"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the signature
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ModelSpend(Base):
    """One model call's money, for the budgets (pipelines.budgets): written `in_flight` with a
    reservation before the call is sent, settled with its cost (or `unpriced`) when it returns.
    Counted by run and by pipeline and day in the transaction that records the next call's
    reservation, so replicas share a pipeline's budget."""

    __tablename__ = "model_spend"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(40))
    call_key: Mapped[str] = mapped_column(String(300))
    model: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # in_flight | spent | unpriced
    reserved_usd: Mapped[float]
    cost_usd: Mapped[float | None]

    __table_args__ = (
        Index("ix_model_spend_pipeline_at", "pipeline", "at"),
        Index("ix_model_spend_run", "run_id"),
    )


class ApprovalNudge(Base):
    """When an undecided approval reminds its approvers and escalates (`@tool(remind_after=…,
    escalate_after=…, escalate_to=…)`), fixed when it is requested, and when each happened. The
    sweeper sets `reminded_at` / `escalated_at` by compare-and-set, so each happens once across
    replicas (pipelines/approval_nudges.py)."""

    __tablename__ = "approval_nudges"

    approval_id: Mapped[str] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True
    )
    remind_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    escalate_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    escalate_to: Mapped[Any] = mapped_column(nullable=True)  # ["@leads", "U123"]

    __table_args__ = (
        Index("ix_approval_nudges_remind", "reminded_at", "remind_at"),
        Index("ix_approval_nudges_escalate", "escalated_at", "escalate_at"),
    )


class ApprovalQuorum(Base):
    """How many distinct people an approval needs (`@tool(approvals_required=N)`, N > 1) and
    how many approved so far. Each vote bumps `approved` by a conditional update, which also
    serialises concurrent votes on one approval (pipelines/quorum.py)."""

    __tablename__ = "approval_quorums"

    approval_id: Mapped[str] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True
    )
    required: Mapped[int] = mapped_column(Integer)
    approved: Mapped[int] = mapped_column(Integer, default=0)


class ApprovalVote(Base):
    """One person's approval of a quorum approval: who, when. The key makes a second click by
    the same person a no-op."""

    __tablename__ = "approval_votes"

    approval_id: Mapped[str] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True
    )
    voter: Mapped[str] = mapped_column(String(200), primary_key=True)
    voted_at: Mapped[datetime]


class PrunedRun(Base):
    """A run retention deleted (`gatehouse prune`, storage/prune.py): its id answers "pruned
    on DATE" instead of "no run"."""

    __tablename__ = "pruned_runs"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    finished_at: Mapped[datetime]
    pruned_at: Mapped[datetime]


class PrunedStats(Base):
    """What `storage.stats` used to read from the rows of pruned runs, kept per pipeline and
    hour: LLM cost, calls and tokens and runs with a human task by the hour the run was created;
    approvals by the hour they were requested (status counts and each decision's wait). Each
    prune batch inserts its own rows; readers add them up (the hourly rollups already hold the
    runs' counts and latencies)."""

    __tablename__ = "pruned_stats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    hour_start: Mapped[datetime]
    llm_cost_usd: Mapped[float] = mapped_column(default=0.0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    priced_llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    runs_with_task: Mapped[int] = mapped_column(Integer, default=0)
    approvals_approved: Mapped[int] = mapped_column(Integer, default=0)
    approvals_rejected: Mapped[int] = mapped_column(Integer, default=0)
    approvals_expired: Mapped[int] = mapped_column(Integer, default=0)
    decision_waits: Mapped[Any] = mapped_column(nullable=True)  # [seconds, …]

    __table_args__ = (Index("ix_pruned_stats_hour", "hour_start", "pipeline"),)
