"""Typed rows: one NamedTuple per table (fields in column order, so `RunRow(*values)` builds one
straight from a `SELECT *`), and one per joined shape a reader returns.

JSON columns are `Any`: they hold whatever JSON the writer stored. `tests/test_storage_rows.py`
checks every table row against its model, so a new column fails there instead of in a caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class RunRow(NamedTuple):
    """A `runs` row."""

    id: str
    pipeline: str
    status: str
    input: Any
    output: Any
    error: str | None
    trigger_user: str | None
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    wake_at: datetime | None
    claimed_by: str | None
    lease_until: datetime | None


class RunEventRow(NamedTuple):
    """A `run_events` row."""

    id: int
    run_id: str
    from_status: str | None
    to_status: str
    at: datetime
    detail: str | None


class CallRow(NamedTuple):
    """A `calls` row."""

    id: str
    run_id: str
    seq: int | None
    key: str
    kind: str
    name: str
    status: str
    input: Any
    output: Any
    error: str | None
    idempotency_key: str | None
    started_at: datetime
    finished_at: datetime | None
    wake_at: datetime | None
    reversed_by: str | None
    meta: Any


class ApprovalRow(NamedTuple):
    """An `approvals` row."""

    id: str
    run_id: str
    call_id: str
    call_key: str
    tool: str
    tool_kind: str
    args: Any
    approvers: Any
    four_eyes: bool
    trigger_user: str | None
    status: str
    requested_at: datetime
    expires_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    validator: Any
    edited: Any = None


class HumanTaskRow(NamedTuple):
    """A `human_tasks` row."""

    id: str
    run_id: str
    call_id: str
    call_key: str
    name: str
    question: str
    output_model: str
    output_schema: Any
    context: Any
    assignees: Any
    status: str
    opened_at: datetime
    answered_by: str | None
    answered_at: datetime | None
    answer: Any


class AuditEntryRow(NamedTuple):
    """An `audit_log` row."""

    id: int
    at: datetime
    event: str
    actor: str | None
    run_id: str | None
    call_id: str | None
    tool: str | None
    approval_id: str | None
    idempotency_key: str | None
    detail: Any
    prev_hash: str
    hash: str
    hash_scheme: str = "v1"


class SlackMessageRow(NamedTuple):
    """A `slack_messages` row."""

    id: int
    kind: str
    ref_id: str
    channel: str
    ts: str
    posted_at: datetime


class ScheduleFireRow(NamedTuple):
    """A `schedule_fires` row."""

    id: int
    schedule: str
    fire_time: datetime
    claimed_by: str
    claimed_at: datetime
    run_id: str | None
    outcome: str
    reason: str | None = None


class ScheduleStateRow(NamedTuple):
    """A `schedule_states` row."""

    schedule: str
    paused: bool
    changed_by: str | None
    changed_at: datetime


class PipelinePauseRow(NamedTuple):
    """A `pipeline_pauses` row."""

    pipeline: str
    paused: bool
    changed_by: str
    reason: str | None
    source: str
    changed_at: datetime


class WebhookDeliveryRow(NamedTuple):
    """A `webhook_deliveries` row."""

    id: int
    pipeline: str
    idempotency_key: str
    body_sha256: str
    run_id: str | None
    received_at: datetime


class ReviewWeekRow(NamedTuple):
    """A `review_weeks` row."""

    id: int
    week_start: datetime
    picked_at: datetime
    status: str
    channel: str | None
    parent_ts: str | None
    summary_ts: str | None


class ReviewItemRow(NamedTuple):
    """A `review_items` row."""

    id: int
    week_id: int
    position: int
    run_id: str
    reply_ts: str | None
    verdict: str | None
    category: str | None
    note: str | None
    expected: Any
    reviewer: str | None
    reviewed_at: datetime | None


class AlertRow(NamedTuple):
    """An `alerts` row."""

    id: int
    pipeline: str
    rule: str
    subject: str
    status: str
    opened_at: datetime
    rate: float
    baseline: float | None
    window_runs: int
    details: Any
    channel: str | None
    ts: str | None
    below_since: datetime | None
    recovered_at: datetime | None


class EvalCaseRow(NamedTuple):
    """A `eval_cases` row."""

    id: int
    eval_id: str
    position: int
    status: str
    input: Any
    expected: Any
    output: Any
    would_calls: Any
    diff: Any
    error: str | None
    note: str | None
    cost_usd: float | None
    latency_ms: float


class StatsRollupRow(NamedTuple):
    """A `stats_rollups` row."""

    id: int
    span_seconds: int
    bucket_start: datetime
    pipeline: str
    created: int
    succeeded: int
    failed: int
    rejected: int
    invalid_input: int
    needs_attention: int
    cancelled: int
    latency_histogram: str


class PendingApprovalRow(NamedTuple):
    """A pending `approvals` row with its run's pipeline (`queries.pending_approvals`)."""

    id: str
    run_id: str
    call_id: str
    call_key: str
    tool: str
    tool_kind: str
    args: Any
    approvers: Any
    four_eyes: bool
    trigger_user: str | None
    status: str
    requested_at: datetime
    expires_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    validator: Any
    edited: Any
    pipeline: str


class OpenTaskRow(NamedTuple):
    """An open `human_tasks` row with its run's pipeline (`queries.open_tasks`)."""

    id: str
    run_id: str
    call_id: str
    call_key: str
    name: str
    question: str
    output_model: str
    output_schema: Any
    context: Any
    assignees: Any
    status: str
    opened_at: datetime
    answered_by: str | None
    answered_at: datetime | None
    answer: Any
    pipeline: str


class ReviewedItemRow(NamedTuple):
    """A reviewed `review_items` row with its run's pipeline, status, input, output and error
    (`review.reviewed_items_since`)."""

    id: int
    week_id: int
    position: int
    run_id: str
    reply_ts: str | None
    verdict: str | None
    category: str | None
    note: str | None
    expected: Any
    reviewer: str | None
    reviewed_at: datetime | None
    pipeline: str
    run_status: str
    run_input: Any
    run_output: Any
    run_error: str | None


class ClaimedRun(NamedTuple):
    """A run a batch claim took (`runs.claim_queued_runs`), with its `started_at` before the
    claim, so that a run released unstarted goes back as it was. A run taken over from a dead
    worker keeps the `started_at` it has (`restores_started=False`)."""

    id: str
    started_before: datetime | None
    restores_started: bool = True


class OrphanCandidate(NamedTuple):
    """A running run's owner and lease (`runs.orphaned_runs`)."""

    id: str
    claimed_by: str | None
    lease_until: datetime | None


class SeenSignatureRow(NamedTuple):
    """A `seen_signatures` row."""

    scope: str
    digest: str
    expires_at: datetime
