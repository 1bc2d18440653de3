"""Undo: run a tool's `reverse` with the original arguments and result, as its own audited call.

The original call is marked `reversed_by` with a compare-and-set before the reverse runs, so two
undo requests cannot both reverse it; a failed reverse clears the mark so it can be retried.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Table, update

from pipelines import call_outcomes
from pipelines.authorization import groups_checked, may_act, refuse
from pipelines.errors import (
    AlreadyReversed,
    NotAnApprover,
    NotAuthorized,
    NotReversible,
    ReversalFailed,
    UnknownCall,
)
from pipelines.four_eyes import check_undo_four_eyes
from pipelines.runtime import Runtime, running_in
from pipelines.tools import Tool, lookup_tool
from pipelines.views import CallView
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.calls import CallRecord
from storage.ids import new_id
from storage.models import CallKind, CallStatus

log = structlog.get_logger()
_calls: Table = call_rows.calls_table


def authorize_undo(rt: Runtime, call: CallRecord, tool: Tool, user: str) -> None:
    """Who may undo `call`: the tool's approvers and the operators (nobody listed on either
    side: anyone, under the open policy); with four-eyes, never the run's triggerer
    (pipelines/four_eyes.py). Every undo asks here: `gatehouse undo`, `/gatehouse undo`, the
    card's Undo button. A refusal is audited and raised."""
    allowed = [*tool.approvers, *rt.authorization.operators]
    try:
        if not may_act(rt, user, allowed):
            operators = ", ".join(rt.authorization.operators)
            raise NotAnApprover(
                "{user} " + f"may not undo {tool.name} (call {call.id}); approvers: "
                f"{', '.join(tool.approvers) or 'none'}"
                + (f"; operators: {operators}" if operators else "")
                + groups_checked(rt, allowed),
                people={"user": user},
            )
        with rt.db.transaction() as conn:
            run = run_rows.fetch_run(conn, call.run_id)
            approval = approval_rows.approval_for_call(conn, call.id)
        check_undo_four_eyes(
            four_eyes=tool.four_eyes or bool(approval is not None and approval.four_eyes),
            trigger_user=run.trigger_user if run is not None else None,
            run_id=call.run_id,
            tool=tool.name,
            call_id=call.id,
            user=user,
        )
    except NotAuthorized as refusal:
        refuse(
            rt,
            refusal,
            actor=user,
            action="undo",
            target=call.id,
            run_id=call.run_id,
            call_id=call.id,
            tool=tool.name,
        )


def undo(rt: Runtime, call_id: str, *, user: str) -> CallView:
    with rt.db.transaction() as conn:
        call = call_rows.fetch_call(conn, call_id)
    if call is None:
        raise UnknownCall(
            f"no call {call_id}; `gatehouse run RUN_ID` lists a run's calls and their ids"
        )
    if call.kind != CallKind.TOOL:
        raise NotReversible(f"call {call_id} is a {call.kind}; only tool calls can be undone")
    tool = lookup_tool(call.name)
    if tool is None:
        raise NotReversible(
            f"tool {call.name!r} is no longer registered, so its reverse is unknown"
        )
    if tool.reverse is None:
        raise NotReversible(f"tool {tool.name!r} declares no reverse=, so it cannot be undone")
    if call.status != CallStatus.SUCCEEDED:
        raise NotReversible(f"call {call_id} is {call.status}; only a succeeded call can be undone")
    if call.reversed_by is not None:
        raise AlreadyReversed(f"call {call_id} was already undone by call {call.reversed_by}")
    authorize_undo(rt, call, tool, user)

    reversal_id = new_id("call")
    idempotency_key = f"undo:{call.idempotency_key}"
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        claimed = conn.execute(
            update(_calls)
            .where(_calls.c.id == call_id, _calls.c.reversed_by.is_(None))
            .values(reversed_by=reversal_id)
        ).rowcount
        if claimed != 1:
            raise AlreadyReversed(f"call {call_id} was undone by someone else a moment ago")
        call_rows.insert_call(
            conn,
            CallRecord(
                id=reversal_id,
                run_id=call.run_id,
                seq=None,
                key=f"undo:{call.key}",
                kind=CallKind.REVERSAL,
                name=tool.name,
                status=CallStatus.STARTED,
                input={"args": call.input, "result": call.output, "undoes": call_id},
                idempotency_key=idempotency_key,
                started_at=now,
            ),
        )
        append_audit(
            conn,
            event="tool.reverse_started",
            at=now,
            actor=user,
            run_id=call.run_id,
            call_id=reversal_id,
            tool=tool.name,
            idempotency_key=idempotency_key,
            detail={"undoes": call_id},
        )
        card = call_outcomes.owe_card_update(rt, conn, call_id, now)
    call_outcomes.nudge_card(rt, card)

    args = tool.args_model.model_validate(call.input)
    result = tool.result_adapter.validate_python(call.output)
    try:
        with running_in(rt):
            tool.reverse(args, result, idempotency_key=idempotency_key)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        with rt.db.transaction() as conn:
            call_rows.update_call(
                conn, reversal_id, status=CallStatus.FAILED, error=error, finished_at=rt.clock.now()
            )
            conn.execute(update(_calls).where(_calls.c.id == call_id).values(reversed_by=None))
            append_audit(
                conn,
                event="tool.reverse_failed",
                at=rt.clock.now(),
                actor=user,
                run_id=call.run_id,
                call_id=reversal_id,
                tool=tool.name,
                detail={"error": error, "undoes": call_id},
            )
            call_outcomes.owe_card_update(rt, conn, call_id, rt.clock.now())
        call_outcomes.nudge_card(rt, card)
        raise ReversalFailed(f"undo of {call_id} failed: {error}; it can be tried again") from exc
    done = rt.clock.now()
    with rt.db.transaction() as conn:
        call_rows.update_call(conn, reversal_id, status=CallStatus.SUCCEEDED, finished_at=done)
        append_audit(
            conn,
            event="tool.reversed",
            at=done,
            actor=user,
            run_id=call.run_id,
            call_id=reversal_id,
            tool=tool.name,
            idempotency_key=idempotency_key,
            detail={"undoes": call_id},
        )
        reversal = call_rows.fetch_call(conn, reversal_id)
        assert reversal is not None  # inserted in this transaction
        call_outcomes.owe_card_update(rt, conn, call_id, done)
    call_outcomes.nudge_card(rt, card)
    log.info("tool.reversed", call_id=call_id, reversal_id=reversal_id, user=user)
    return CallView.of(reversal)
