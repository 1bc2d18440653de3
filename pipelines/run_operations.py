"""Run operations: what a person does with a run that cannot go on by itself. `cancel` ends a
queued, waiting, running or stuck run; `retry` starts a new attempt of a failed, stuck or
cancelled one from its record; `resolve` settles a call whose outcome is unknown.

Each is a compare-and-set on the run's status (two operators, or an operator and a worker, move
it once), audited, and allowed to the operators (`GATEHOUSE_OPERATORS`) and the approvers of the
run's tools (like undo; with nobody listed, anyone under the open policy). A retry keeps the run
id: its record is its history, so the succeeded calls are reused by the replay and only the call
that ended the attempt is taken out of the record to be made again; the attempt number is
counted from the `run.retried` audit entries, and each shows in the run's transitions.

A running run is cancelled at once in the database; the worker executing it finds the run no
longer its own at its next tool or model call (`stop_if_cancelled`) and stops without writing,
as it does when it loses its claim. A tool already executing finishes and is recorded.
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import Connection

from pipelines import run_notices
from pipelines.attention import had_notice, notify_attention
from pipelines.authorization import may_act, refuse
from pipelines.errors import (
    InvalidResult,
    LostClaim,
    NotARunOperator,
    NotUnknown,
    OutcomeUnresolved,
    ReasonRequired,
    ResultRequired,
    RunNotCancellable,
    RunNotRetryable,
    UnknownCall,
)
from pipelines.journal import Journal
from pipelines.pruned import missing_run
from pipelines.runtime import Runtime
from pipelines.tools import lookup_tool
from pipelines.validation import format_validation_errors
from pipelines.views import ApprovalView, CallView, TaskView
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage import run_operations as op_rows
from storage import runs as run_rows
from storage.audit import append_audit, chain_head
from storage.calls import CallRecord
from storage.fastsql import fast_select, fast_update
from storage.models import ApprovalStatus, CallKind, CallStatus, RunStatus, TaskStatus
from storage.rows import RunRow

log = structlog.get_logger()

# In a call's meta once a retry took it out of the record: the attempt that makes it again.
REPLACED_BY = "replaced_by_attempt"

CANCELLABLE = (RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING, RunStatus.NEEDS_ATTENTION)
RETRYABLE = (RunStatus.FAILED, RunStatus.NEEDS_ATTENTION, RunStatus.CANCELLED)


# -- the live run's end: one check at each call boundary -------------------------------------


def stop_if_cancelled(journal: Journal) -> None:
    """Before a tool or model call: is the run still running under this worker's claim? A
    cancel (or a lost claim) says no, and the run stops here without writing anything."""
    with journal.fast_read() as conn:  # no write lock: a read before every call
        rows = fast_select(conn, run_rows.runs_table, {"id": journal.run_id}, RunRow)
    run = rows[0] if rows else None
    if run is None:
        stop_unless_ours(journal, None, None)
    else:
        stop_unless_ours(journal, run.status, run.claimed_by)


def stop_unless_ours(journal: Journal, status: str | None, claimed_by: str | None) -> None:
    """`stop_if_cancelled` on what the caller read (`status` None: the run is gone)."""
    if status == RunStatus.RUNNING and claimed_by == journal.rt.worker_id:
        return
    log.info(
        "run.stopped",
        run_id=journal.run_id,
        status=status,
        why="cancelled" if status == RunStatus.CANCELLED else "claim lost",
    )
    raise LostClaim(journal.run_id)


# -- who may ---------------------------------------------------------------------------------


def _authorize(
    rt: Runtime,
    user: str,
    action: str,
    target: str,
    *,
    run_id: str,
    tools: list[str],
    call_id: str | None = None,
) -> None:
    """The operators and the approvers of `tools` (the run's, or the call's one tool)."""
    approvers: list[str] = []
    for name in dict.fromkeys(tools):
        tool = lookup_tool(name)
        if tool is not None:
            approvers += [a for a in tool.approvers if a not in approvers]
    operators = list(rt.authorization.operators)
    if may_act(rt, user, [*approvers, *operators]):
        return
    whose = "its tools" if len(tools) != 1 else tools[0]
    refuse(
        rt,
        NotARunOperator(
            f"{user} may not {action} {target}; who may: the operators "
            f"({', '.join(operators) or 'none listed'}; GATEHOUSE_OPERATORS) and the approvers "
            f"of {whose} ({', '.join(approvers) or 'none listed'})"
        ),
        actor=user,
        action=action,
        target=target,
        run_id=run_id,
        call_id=call_id,
        tool=tools[0] if len(tools) == 1 else None,
    )


def _tools_of(calls: list[CallRecord]) -> list[str]:
    return [c.name for c in calls if c.kind == CallKind.TOOL]


def _load(rt: Runtime, run_id: str) -> tuple[RunRow, list[CallRecord]]:
    with rt.db.transaction() as conn:
        run = run_rows.fetch_run(conn, run_id)
        calls = call_rows.recorded_calls(conn, run_id)
        if run is None:
            raise missing_run(conn, run_id)
    return run, calls


def _reason(reason: str | None, action: str, target: str) -> str:
    if not (reason and reason.strip()):
        raise ReasonRequired(f'{action} {target} needs a reason (--reason "...")')
    return reason.strip()


# -- cancel ----------------------------------------------------------------------------------


def cancel(rt: Runtime, run_id: str, *, user: str, reason: str) -> RunRow:
    """End the run as `cancelled` now; its pending approvals and open tasks are closed (their
    cards say who cancelled and why). A running run stops at its next tool or model call."""
    reason = _reason(reason, "cancelling", run_id)
    run, calls = _load(rt, run_id)
    if run.status not in CANCELLABLE:
        raise RunNotCancellable(_finished_message(run, "cancelled"))
    _authorize(rt, user, "cancel", run_id, run_id=run_id, tools=_tools_of(calls))
    now = rt.clock.now()
    error = f"cancelled by {user}: {reason}"
    with rt.db.transaction() as conn:
        # The audit chain's lock before the run's row, the order a run's own suspensions take
        # them in (they audit, then move the run): the other order deadlocks on PostgreSQL.
        chain_head(conn)
        moved = run_rows.transition(
            conn,
            run_id,
            from_statuses=CANCELLABLE,
            to_status=RunStatus.CANCELLED,
            now=now,
            detail=error,
            error=error,
            finished_at=now,
            wake_at=None,
        )
        if not moved:
            now_run = run_rows.fetch_run(conn, run_id)
            assert now_run is not None  # runs are not deleted under a cancel
            raise RunNotCancellable(_finished_message(now_run, "cancelled"))
        approvals, tasks = _close_waits(rt, conn, run_id, user=user, reason=reason, now=now)
        append_audit(
            conn,
            event="run.cancelled",
            at=now,
            actor=user,
            run_id=run_id,
            detail={
                "reason": reason,
                "was": str(run.status),
                "approvals_closed": [a.id for a in approvals],
                "tasks_closed": [t.id for t in tasks],
            },
        )
        noticed = had_notice(conn, run, now, rt)
        # Whoever triggered it from Slack is told it ended, as for any other end.
        tell = run_notices.tells_triggerer(rt, run.trigger, run.trigger_user)
        if tell:
            run_notices.owe_notice(rt, conn, run_id, now)
        cancelled = run_rows.fetch_run(conn, run_id)
    assert cancelled is not None
    if noticed:
        notify_attention(rt, run_id)
    if tell:
        run_notices.nudge(rt, run_id)
    log.info("run.cancelled", run_id=run_id, user=user, was=str(run.status))
    for approval in approvals:
        rt.notify("approval_decided", ApprovalView.of(approval, pipeline=run.pipeline))
    for task in tasks:
        rt.notify(
            "task_answered",
            TaskView.of(task, pipeline=run.pipeline, authorization=rt.authorization),
        )
    return cancelled


def _close_waits(
    rt: Runtime, conn: Connection, run_id: str, *, user: str, reason: str, now: Any
) -> tuple[list[Any], list[Any]]:
    """In the cancelling transaction: close what the run waits on, each compare-and-set (a
    decision that landed first stands, and its run is cancelled anyway)."""
    closed_approvals = []
    for approval in op_rows.pending_approvals_of_run(conn, run_id):
        if op_rows.cancel_approval(conn, approval.id, by=user, at=now, reason=reason):
            append_audit(
                conn,
                event="approval.cancelled",
                at=now,
                actor=user,
                run_id=run_id,
                call_id=approval.call_id,
                tool=approval.tool,
                approval_id=approval.id,
                detail={"reason": reason},
            )
            rt.enqueue(conn, "approval_decided", approval.id, now)
            closed_approvals.append(approval_rows.fetch_approval(conn, approval.id))
    closed_tasks = []
    for task in op_rows.open_tasks_of_run(conn, run_id):
        if op_rows.cancel_task(conn, task.id, by=user, at=now, reason=reason):
            append_audit(
                conn,
                event="task.cancelled",
                at=now,
                actor=user,
                run_id=run_id,
                call_id=task.call_id,
                detail={"task_id": task.id, "reason": reason},
            )
            rt.enqueue(conn, "task_answered", task.id, now)
            closed_tasks.append(approval_rows.fetch_task(conn, task.id))
    return closed_approvals, closed_tasks


def _finished_message(run: RunRow, wanted: str) -> str:
    when = f" at {run.finished_at:%Y-%m-%d %H:%M} UTC" if run.finished_at else ""
    message = f"run {run.id} already finished {run.status}{when}; a finished run cannot be {wanted}"
    if run.status == RunStatus.FAILED:
        message += f" (`gatehouse retry {run.id}` starts a new attempt)"
    return message


# -- retry -----------------------------------------------------------------------------------


def retry(rt: Runtime, run_id: str, *, user: str) -> RunRow:
    """Queue a new attempt of a failed, needs_attention or cancelled run. Its succeeded calls
    are reused by the replay; the call that ended the attempt (a failure, a wait the cancel
    closed) is taken out of the record and made again. A call whose outcome is unknown blocks
    the retry until `resolve` says whether its effect happened."""
    run, calls = _load(rt, run_id)
    if run.status not in RETRYABLE:
        if run.status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
            raise RunNotRetryable(
                f"run {run_id} is {run.status}, not finished; only a failed, needs_attention or "
                f"cancelled run can be retried (`gatehouse cancel {run_id}` ends it first)"
            )
        raise RunNotRetryable(
            f"run {run_id} finished {run.status}; only a failed, needs_attention or cancelled "
            "run can be retried"
        )
    _authorize(rt, user, "retry", run_id, run_id=run_id, tools=_tools_of(calls))
    for call in calls:
        if call.status == CallStatus.OUTCOME_UNKNOWN:
            raise OutcomeUnresolved(
                f"run {run_id} cannot be retried: call {call.id} ({call.name}) has an unknown "
                f"outcome and {call.name} is not idempotent. Check whether the effect with "
                f"idempotency key {call.idempotency_key} happened, then run `gatehouse resolve "
                f"{call.id} --happened [--result JSON]` or `--did-not-happen` first"
            )
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        rerun = _call_to_make_again(conn, calls)
        attempt = op_rows.attempts_of_run(conn, run_id) + 1
        moved = run_rows.transition(
            conn,
            run_id,
            from_statuses=[RunStatus(run.status)],
            to_status=RunStatus.QUEUED,
            now=now,
            detail=f"retry by {user}: attempt {attempt}",
            error=None,
            output=None,
            finished_at=None,
            wake_at=None,
        )
        if not moved:
            raise RunNotRetryable(
                f"run {run_id} changed while it was being retried (someone else retried, "
                f"resolved or resumed it); `gatehouse run {run_id}` shows it now"
            )
        if rerun is not None:
            was = rerun.meta if isinstance(rerun.meta, dict) else {}
            op_rows.detach_call(conn, rerun.id, meta={**was, REPLACED_BY: attempt})
        append_audit(
            conn,
            event=op_rows.RETRIED,
            at=now,
            actor=user,
            run_id=run_id,
            call_id=rerun.id if rerun is not None else None,
            detail={
                "attempt": attempt,
                "was": str(run.status),
                "error": run.error,
                "made_again": None if rerun is None else rerun.key,
            },
        )
        noticed = had_notice(conn, run, now, rt)
        queued = run_rows.fetch_run(conn, run_id)
    assert queued is not None
    if noticed:
        notify_attention(rt, run_id)
    log.info("run.retried", run_id=run_id, user=user, attempt=attempt)
    return queued


def _call_to_make_again(conn: Connection, calls: list[CallRecord]) -> CallRecord | None:
    """The last recorded call, when it is what ended the attempt: a failure, or an approval or a
    task the cancel closed (or that expired). Anything else is reused as recorded (an approved
    call not yet started starts; a rate-limited one waits its window again)."""
    if not calls:
        return None
    last = calls[-1]
    if last.status == CallStatus.FAILED:
        return last
    if last.status == CallStatus.AWAITING_APPROVAL:
        approval = approval_rows.approval_for_call(conn, last.id)
        if approval is None or approval.status != ApprovalStatus.APPROVED:
            return last
    if last.status == CallStatus.AWAITING_HUMAN:
        task = approval_rows.task_for_call(conn, last.id)
        if task is None or task.status == TaskStatus.CANCELLED:
            return last
    return None


# -- resolve ---------------------------------------------------------------------------------


def resolve(
    rt: Runtime,
    call_id: str,
    *,
    user: str,
    happened: bool,
    reason: str,
    result: Any = None,
) -> CallView:
    """Settle an `outcome_unknown` call: it happened (with `result`, validated by the tool's
    result model, as if the tool had returned it) or it did not (the replay runs it again, under
    the same idempotency key). A run stuck on it is queued to carry on from there."""
    reason = _reason(reason, "resolving", call_id)
    with rt.db.transaction() as conn:
        call = call_rows.fetch_call(conn, call_id)
    if call is None:
        raise UnknownCall(f"no call {call_id}; `gatehouse run RUN_ID` lists a run's calls")
    if call.status != CallStatus.OUTCOME_UNKNOWN:
        raise NotUnknown(
            f"call {call_id} ({call.name}) is {call.status}, not outcome_unknown; only a call "
            "whose outcome is unknown can be resolved"
        )
    _authorize(rt, user, "resolve", call_id, run_id=call.run_id, tools=[call.name], call_id=call_id)
    output = _checked_result(call, result) if happened else None
    now = rt.clock.now()
    verdict = "happened" if happened else "did not happen"
    with rt.db.transaction() as conn:
        settled = call_rows.calls_table
        values: dict[str, Any] = {
            "status": CallStatus.SUCCEEDED if happened else CallStatus.DID_NOT_HAPPEN,
            "output": output,
            "error": None if happened else f"did not happen (resolved by {user}: {reason})",
            "finished_at": now if happened else None,
        }
        where = {"id": call_id, "status": CallStatus.OUTCOME_UNKNOWN}
        if fast_update(conn, settled, values, where) != 1:
            raise NotUnknown(f"call {call_id} was resolved by someone else a moment ago")
        append_audit(
            conn,
            event="tool.resolved",
            at=now,
            actor=user,
            run_id=call.run_id,
            call_id=call_id,
            tool=call.name,
            idempotency_key=call.idempotency_key,
            detail={"happened": happened, "result": output, "reason": reason},
        )
        run_rows.transition(
            conn,
            call.run_id,
            from_statuses=[RunStatus.NEEDS_ATTENTION],
            to_status=RunStatus.QUEUED,
            now=now,
            detail=f"call {call_id} resolved by {user}: {verdict}",
            error=None,
            finished_at=None,
        )
        run = run_rows.fetch_run(conn, call.run_id)
        noticed = run is not None and had_notice(conn, run, now, rt)
        resolved = call_rows.fetch_call(conn, call_id)
    assert resolved is not None
    if noticed:
        notify_attention(rt, call.run_id)
    log.info("call.resolved", call_id=call_id, user=user, happened=happened)
    return CallView.of(resolved)


def _checked_result(call: CallRecord, result: Any) -> Any:
    tool = lookup_tool(call.name)
    if tool is None:
        if result is None:
            raise ResultRequired(
                f"tool {call.name!r} is no longer registered; give its result with --result JSON"
            )
        return result
    try:
        value = tool.result_adapter.validate_python(result)
    except ValidationError as exc:
        if result is None:
            raise ResultRequired(
                f"{call.name} returns a result: give what it returned with --result JSON "
                f"({format_validation_errors(exc)})"
            ) from exc
        raise InvalidResult(
            f"--result does not fit {call.name}'s result model: {format_validation_errors(exc)}"
        ) from exc
    return tool.result_adapter.dump_python(value, mode="json")
