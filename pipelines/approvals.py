"""Approvals, both ends: a tool call's request (by a rule, or by the validator model's verdict),
who may decide, the compare-and-set decision, expiry at the deadline, and the replay that
settles the call once it is decided.

Every refusal (not an approver, four-eyes) is written to the audit log before it is raised
(`pipelines.authorization.refuse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn

import structlog
from sqlalchemy import Connection

from pipelines import (
    approval_edits,
    approval_nudges,
    observations,
    quorum,
    sensitive,
    task_outcomes,
)
from pipelines.authorization import groups_checked, may_act, refuse
from pipelines.errors import (
    ActionRejected,
    AlreadyDecided,
    CancelRun,
    InvalidEdit,
    NeedsAttention,
    NotAnApprover,
    NotAuthorized,
    ReasonRequired,
    Suspend,
    UnknownApproval,
)
from pipelines.four_eyes import check_four_eyes
from pipelines.journal import CallRecord, Journal, NextCall
from pipelines.llm import LLMConfigurationError
from pipelines.runtime import Runtime
from pipelines.tools import Tool, lookup_tool
from pipelines.validator import (
    VALIDATOR_TASK,
    Judgement,
    Validator,
    ValidatorVerdict,
    call_name,
    judge,
    system_text,
)
from pipelines.validator import prompt as validator_prompt
from pipelines.views import ApprovalView, Quorum
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.ids import new_id
from storage.models import ApprovalStatus, CallKind, CallStatus
from storage.rows import ApprovalRow

log = structlog.get_logger()


# -- the run's end: request, settle ---------------------------------------------------------


def request(
    journal: Journal,
    tool: Tool,
    call: NextCall,
    args_json: Any,
    judgement: Judgement | None = None,
) -> NoReturn:
    """Record the call as awaiting approval, open the request, suspend the run."""
    now = journal.rt.clock.now()
    approval_id = new_id("approval")
    record = call.record(
        CallStatus.AWAITING_APPROVAL,
        input=args_json,
        idempotency_key=call.idempotency_key,
        started_at=now,
    )
    values = {
        "id": approval_id,
        "run_id": journal.run_id,
        "call_id": record.id,
        "call_key": call.key,
        "tool": tool.name,
        "tool_kind": tool.kind,
        "args": args_json,
        "approvers": list(tool.approvers),
        "four_eyes": tool.four_eyes,
        "trigger_user": journal.trigger_user,
        "status": ApprovalStatus.PENDING,
        "requested_at": now,
        "expires_at": now + tool.expires if tool.expires is not None else None,
        "validator": judgement.to_json() if judgement is not None else None,
    }
    with journal.transaction() as conn:
        call_rows.insert_call(conn, record)
        approval_rows.insert_approval(conn, **values)
        approval_nudges.schedule(conn, tool, approval_id, now)
        quorum.open_quorum(conn, tool, approval_id)
        journal.audit(
            conn,
            record,
            "approval.requested",
            at=now,
            actor=journal.trigger_user,
            approval_id=approval_id,
            detail={
                "args": args_json,
                **({"validator": values["validator"]} if judgement else {}),
            },
        )
        journal.suspend(conn, now, f"approval {approval_id}")
        journal.rt.enqueue(conn, "approval_requested", approval_id, now)
        task_cards = journal.owe_task_cards(conn, now)  # after the approval's row: it links it
    view = ApprovalView.of(
        ApprovalRow(**values, decided_by=None, decided_at=None, reason=None),
        pipeline=journal.pipeline,
    )
    if tool.approvals_required > 1:
        view = replace(view, quorum=Quorum(required=tool.approvals_required))
    log.info("approval.requested", run_id=journal.run_id, approval_id=approval_id, tool=tool.name)
    journal.rt.notify("approval_requested", view)
    task_outcomes.nudge_task_cards(journal.rt, task_cards)
    raise Suspend(f"waiting for approval {approval_id}", waiting_for=approval_id)


def settle(journal: Journal, tool: Tool, call_id: str) -> None:
    """Replaying a call that waited for approval: go on, wait again, or raise the rejection."""
    if _approved_here(journal.rt, call_id):  # just now, by this process: final, no read
        return
    with journal.fast_read() as conn:  # a decided approval stays decided: no write lock to go on
        approval = approval_rows.approval_for_call(conn, call_id)
    if approval is not None and approval.status == ApprovalStatus.APPROVED:
        return
    with journal.transaction() as conn:
        approval = approval_rows.approval_for_call(conn, call_id)
        if approval is None:
            raise NeedsAttention(f"tool call {call_id} awaits an approval that does not exist")
        if approval.status == ApprovalStatus.APPROVED:
            return
        now = journal.rt.clock.now()
        if approval.status == ApprovalStatus.PENDING:
            journal.suspend(conn, now, f"approval {approval.id}")
            waiting = approval.id
        else:
            if approval.status == ApprovalStatus.EXPIRED:
                reason = f"approval {approval.id} expired at {approval.decided_at:%Y-%m-%d %H:%M} UTC without a decision"
            else:
                reason = f"rejected by {approval.decided_by}: {approval.reason}"
            call_rows.update_call(
                conn, call_id, status=CallStatus.REJECTED, error=reason, finished_at=now
            )
            waiting = None
    if waiting is not None:
        raise Suspend(f"waiting for approval {waiting}", waiting_for=waiting)
    if approval.status == ApprovalStatus.EXPIRED and tool.on_expiry == "cancel":
        raise CancelRun(reason)
    raise ActionRejected(tool.name, reason, by=approval.decided_by)


# -- the validator model as an approval source ----------------------------------------------


def consult_validator(journal: Journal, tool: Tool, rule: Validator, args_json: Any) -> Judgement:
    """The validation model's verdict on this call, recorded as an LLM call of the run just
    before the tool's own; a resume or a replay judges the recorded verdict again."""
    call = journal.next(CallKind.LLM, call_name(tool.name))
    if call.recorded is not None:
        return judge_recorded(rule, call.recorded)
    rt = journal.rt
    started_at = rt.clock.now()
    with journal.transaction() as conn:
        run = run_rows.fetch_run(conn, journal.run_id)
        earlier = [
            (str(c.kind), str(c.name), c.output)
            for c in call_rows.recorded_calls(conn, journal.run_id)
            if c.seq is not None and c.seq < call.seq
        ]
    prompt = validator_prompt(
        tool_name=tool.name,
        kind=tool.kind,
        description=tool.description,
        args=args_json,
        pipeline=journal.pipeline,
        run_input=run.input if run is not None else None,
        earlier=earlier,
    )
    system = system_text(rule)
    call_input = {
        "task": VALIDATOR_TASK,
        "model": rule.model or rt.llm.config.model,
        "system": system,
        "prompt": prompt,
        "min_confidence": rule.min_confidence,
        "max_attempts": 2,
        "validates": tool.name,
    }
    try:
        result = rt.llm.call(
            task=VALIDATOR_TASK,
            prompt=prompt,
            output=ValidatorVerdict,
            system=system,
            model=rule.model,
            max_attempts=2,
            name=call.name,
        )
    except LLMConfigurationError as exc:
        # The gate stays closed either way: a person (or `then="reject"`) decides instead.
        reason = str(exc)
        meta: dict[str, Any] = {
            "model": call_input["model"],
            "failure": "model_error",
            "reason": reason,
            "validator": True,
        }
        journal.record(
            call.record(
                CallStatus.FAILED, input=call_input, started_at=started_at, error=reason, meta=meta
            )
        )
        return judge(
            rule, model=meta["model"], verdict=None, failure="model_error", failure_reason=reason
        )
    meta = {**result.meta(), "validator": True}
    call_input["model"] = result.model
    log.info(
        "validator.called",
        run_id=journal.run_id,
        call=call.key,
        model=result.model,
        failure=result.failure,
        latency_ms=result.latency_ms,
    )
    value = result.value
    if result.failure is None and isinstance(value, ValidatorVerdict):
        meta["answered_by"] = "model"
        output = sensitive.scrub(value.model_dump(mode="json"))
        journal.record(
            call.record(
                CallStatus.SUCCEEDED,
                input=call_input,
                started_at=started_at,
                output=output,
                meta=meta,
            )
        )
        verdict = ValidatorVerdict.model_validate(output)
        return judge(rule, model=result.model, verdict=verdict)
    reason = result.reason or "no usable verdict"
    journal.record(
        call.record(
            CallStatus.FAILED, input=call_input, started_at=started_at, error=reason, meta=meta
        )
    )
    return judge(
        rule, model=result.model, verdict=None, failure=result.failure, failure_reason=reason
    )


def judge_recorded(rule: Validator, recorded: CallRecord) -> Judgement:
    """The judgement a recorded verdict (or a recorded failure to give one) stands for."""
    was = recorded.meta or {}
    if recorded.status == CallStatus.SUCCEEDED:
        verdict = ValidatorVerdict.model_validate(recorded.output)
        return judge(rule, model=was.get("model"), verdict=verdict)
    return judge(
        rule,
        model=was.get("model"),
        verdict=None,
        failure=was.get("failure"),
        failure_reason=recorded.error,
    )


def reject_by_validator(
    journal: Journal,
    tool: Tool,
    judgement: Judgement,
    call: NextCall,
    args_json: Any,
) -> NoReturn:
    """The validator said no (or could not say, with `then="reject"`): the call is recorded
    rejected, as a person's rejection would be, and the pipeline gets `ActionRejected`."""
    now = journal.rt.clock.now()
    reason = f"rejected by {judgement.actor}: {judgement.reason}"
    if judgement.outcome == "reject" and (
        judgement.verdict != "reject" or (judgement.confidence or 0) < judgement.min_confidence
    ):
        reason = f"rejected: {judgement.summary} (the validator's fallback is to reject)"
    reason = sensitive.scrub(reason)
    record = call.record(
        CallStatus.REJECTED,
        input=args_json,
        idempotency_key=call.idempotency_key,
        started_at=now,
        finished_at=now,
        error=reason,
    )
    with journal.transaction() as conn:
        call_rows.insert_call(conn, record)
        journal.audit(
            conn,
            record,
            "validator.rejected",
            at=now,
            actor=judgement.actor,
            detail={"decision": reason, **judgement.to_json()},
        )
    log.info("validator.rejected", run_id=journal.run_id, tool=tool.name, model=judgement.model)
    raise ActionRejected(tool.name, reason, by=judgement.actor)


def audit_validator_approval(
    journal: Journal,
    conn: Connection,
    record: CallRecord,
    judgement: Judgement,
    now: datetime,
) -> None:
    """In the transaction that starts the call: the validator let it through."""
    journal.audit(
        conn,
        record,
        "validator.approved",
        at=now,
        actor=judgement.actor,
        detail={"decision": f"approved by {judgement.actor}", **judgement.to_json()},
    )


# -- the deciding end: who may decide, decide, expire ---------------------------------------


def check_approver(rt: Runtime, approval: Any, user: str) -> None:
    """The gate's approvers, resolved by the one directory; then four-eyes
    (pipelines/four_eyes.py). A refusal names the sources each group was looked up in."""
    approvers = list(approval.approvers or [])
    if not may_act(rt, user, approvers):
        raise NotAnApprover(
            "{user} " + f"may not approve {approval.tool} (approval {approval.id}); "
            f"approvers: {', '.join(approvers)}" + groups_checked(rt, approvers),
            people={"user": user},
        )
    check_four_eyes(rt, approval, user, approvers)


def authorize_approver(rt: Runtime, approval: Any, user: str, *, action: str) -> None:
    """`check_approver`, with a refusal audited (`action` on the approval) and raised: the
    decision itself and Slack's edit form both ask this."""
    try:
        check_approver(rt, approval, user)
    except NotAuthorized as refusal:
        refuse(
            rt,
            refusal,
            actor=user,
            action=action,
            target=approval.id,
            run_id=approval.run_id,
            call_id=approval.call_id,
            tool=approval.tool,
            approval_id=approval.id,
        )


def _already_decided_message(approval: Any) -> str:
    if approval.status == ApprovalStatus.EXPIRED:
        return f"approval {approval.id} expired at {approval.decided_at:%Y-%m-%d %H:%M} UTC; nothing to decide"
    when = f" at {approval.decided_at:%Y-%m-%d %H:%M} UTC" if approval.decided_at else ""
    return f"approval {approval.id} was already {approval.status} by {approval.decided_by}{when}"


def decide(
    rt: Runtime,
    approval_id: str,
    *,
    user: str,
    approve: bool,
    reason: str | None = None,
    edited_args: Mapping[str, Any] | None = None,
) -> ApprovalView:
    """Approve or reject once. Two concurrent decisions: one wins, the other gets AlreadyDecided.
    `edited_args` (approve only): the approver's changes to the tool's editable arguments
    (pipelines/approval_edits.py), recorded in the same compare-and-set."""
    if edited_args is not None and not approve:
        raise InvalidEdit("only an approval carries edited arguments; reject without them", {})
    if not approve and not (reason and reason.strip()):
        raise ReasonRequired(f'rejecting {approval_id} needs a reason (--reason "...")')
    with rt.db.read() as conn:  # checked again by the compare-and-set below
        approval = approval_rows.fetch_approval(conn, approval_id)
        # An approval's quorum is written with it and never changes: read once, before deciding.
        required = (
            quorum.required_votes(conn, approval_id) if approve and approval is not None else None
        )
    if approval is None:
        raise UnknownApproval(f"no approval {approval_id}; `gatehouse pending` lists the open ones")
    if approval.status != ApprovalStatus.PENDING:
        raise AlreadyDecided(_already_decided_message(approval))
    if approval.expires_at is not None and approval.expires_at <= rt.clock.now():
        # Past its deadline but not swept yet (no worker running): expire it now, as the
        # worker would have, instead of letting a late click approve it.
        expire_due(rt)
        with rt.db.transaction() as conn:
            approval = approval_rows.fetch_approval(conn, approval_id)
        raise AlreadyDecided(_already_decided_message(approval))
    authorize_approver(rt, approval, user, action="approve" if approve else "reject")
    edit = (
        approval_edits.prepare(lookup_tool(approval.tool), approval, edited_args, by=user)
        if edited_args is not None
        else None
    )
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    stored_reason = reason if not approve else reason or None
    now = rt.clock.now()
    detail: dict[str, Any] = {"reason": reason}
    # Counting a quorum's votes takes SQLAlchemy statements; every other decision writes only
    # `storage.fastsql` ones, on the driver's own transaction.
    opened = rt.db.transaction() if required is not None else rt.db.driver_transaction()
    try:
        with opened as conn:
            # A quorum approval (`approvals_required`): count this person's vote; only the
            # vote that completes the quorum goes on to decide.
            tally = (
                quorum.cast_vote(conn, approval, required, user=user, now=now)
                if required is not None
                else None
            )
            counted = tally is not None and not tally.complete
            won = counted or approval_rows.decide_approval(
                conn,
                approval_id,
                status=status,
                by=user,
                at=now,
                reason=stored_reason,
            )
            if tally is not None and won:
                quorum.audit_vote(conn, approval, tally, user=user, now=now)
            if counted:
                view = _counted_vote(rt, conn, approval, now=now)
            elif won:
                if edit is not None and edit.changes:
                    detail["edited"] = approval_edits.record(conn, approval, edit, now)
                _record_decision(conn, approval, status, actor=user, now=now, detail=detail)
                rt.enqueue(conn, "approval_decided", approval_id, now)
            elif tally is not None:
                raise quorum.VoteTooLate(approval_id)  # roll the vote back with the decision
            # The winner knows what it wrote (unless an edit rewrote the arguments); only a
            # loser, a counted vote or an edit reads the approval back.
            plain_win = won and not counted and (edit is None or not edit.changes)
            decided = (
                approval._replace(
                    status=status, decided_by=user, decided_at=now, reason=stored_reason
                )
                if plain_win
                else approval_rows.fetch_approval(conn, approval_id)
            )
            run = run_rows.fetch_run(conn, approval.run_id)
    except quorum.VoteTooLate:
        won = counted = False
        with rt.db.transaction() as conn:
            decided = approval_rows.fetch_approval(conn, approval_id)
            run = run_rows.fetch_run(conn, approval.run_id)
    if counted:  # after the commit: the card shows the vote, the run keeps waiting
        shown = quorum.progress(view.quorum) if view.quorum else None
        log.info("approval.voted", approval_id=approval_id, user=user, progress=shown)
        rt.notify("approval_requested", view)
        return view
    assert decided is not None
    if not won:
        if decided.status == ApprovalStatus.PENDING:  # the deadline passed under our feet
            expire_due(rt)
            with rt.db.transaction() as conn:
                decided = approval_rows.fetch_approval(conn, approval_id)
        raise AlreadyDecided(_already_decided_message(decided))
    if status == ApprovalStatus.APPROVED:  # committed, and final: its resume need not re-read it
        _remember_approved(rt, decided.call_id)
    view = ApprovalView.of(decided, pipeline=run.pipeline if run else None)
    if tally is not None or not approve:  # a rejection's card says who had approved before
        with rt.db.transaction() as conn:
            [view] = quorum.with_quorum(conn, [view])
    log.info("approval.decided", approval_id=approval_id, status=str(status), user=user)
    watcher = observations.observer()
    if watcher.active:
        watcher.approval_decided(
            observations.pipeline_label(run.pipeline if run else ""),
            str(status),
            max((now - approval.requested_at).total_seconds(), 0.0),
        )
    rt.notify("approval_decided", view)
    return view


_APPROVED_KEPT = 1024


def _remember_approved(rt: Runtime, call_id: str) -> None:
    remembered = rt.approved_calls
    if len(remembered) >= _APPROVED_KEPT:  # nobody resumed those here (another worker did)
        remembered.clear()
    remembered.add(call_id)


def _approved_here(rt: Runtime, call_id: str) -> bool:
    """Was `call_id` approved by this process (`_remember_approved`)? Each answer is given once:
    the entry is taken, so a later replay of the call reads the record."""
    try:
        rt.approved_calls.remove(call_id)
    except KeyError:
        return False
    return True


def _counted_vote(
    rt: Runtime, conn: Connection, approval: ApprovalRow, *, now: datetime
) -> ApprovalView:
    """In the deciding transaction: a quorum vote was counted and more are needed; the card is
    owed again (it shows who approved so far) and the run keeps waiting."""
    rt.enqueue(conn, "approval_requested", approval.id, now)
    run = run_rows.fetch_run(conn, approval.run_id)
    [view] = approval_nudges.with_nudges(
        conn, [ApprovalView.of(approval, pipeline=run.pipeline if run else None)]
    )
    [view] = quorum.with_quorum(conn, [view])
    return view


def expire_due(rt: Runtime) -> list[ApprovalView]:
    """Expire every pending approval past its deadline; their runs are queued to see it."""
    now = rt.clock.now()
    expired: list[ApprovalView] = []
    with rt.db.transaction() as conn:
        due = approval_rows.due_expiries(conn, now)
    for approval_id in due:
        with rt.db.transaction() as conn:
            if not approval_rows.decide_approval(
                conn,
                approval_id,
                status=ApprovalStatus.EXPIRED,
                by=None,
                at=now,
                reason="expired without a decision",
            ):
                continue
            approval = approval_rows.fetch_approval(conn, approval_id)
            assert approval is not None
            run = run_rows.fetch_run(conn, approval.run_id)
            _record_decision(
                conn, approval, ApprovalStatus.EXPIRED, actor=None, now=now, detail=None
            )
            rt.enqueue(conn, "approval_decided", approval_id, now)
        view = ApprovalView.of(approval, pipeline=run.pipeline if run else None)
        log.info("approval.expired", approval_id=approval_id)
        rt.notify("approval_decided", view)
        expired.append(view)
    return expired


def _record_decision(
    conn: Connection,
    approval: Any,
    status: ApprovalStatus,
    *,
    actor: str | None,
    now: datetime,
    detail: Any,
) -> None:
    """In the deciding transaction: audit the decision and queue the run to act on it."""
    append_audit(
        conn,
        event=f"approval.{status}",
        at=now,
        actor=actor,
        run_id=approval.run_id,
        call_id=approval.call_id,
        tool=approval.tool,
        approval_id=approval.id,
        detail=detail,
    )
    run_rows.requeue_waiting(
        conn, approval.run_id, now=now, detail=f"approval {approval.id} {status}"
    )
