"""Four-eyes: the rule that a second person decides a call someone already shaped.

With `four_eyes` on a tool (the default for `spend` and `send`), these people may not approve
or reject its call:

- whoever triggered the run;
- whoever answered a human task of the run (`ctx.ask_human`, or an LLM step's human exit) on a
  call recorded before the gated one: their answer may have set the call's arguments, and the
  engine does not trace which answer flows where, so every earlier answer counts.

Nor may the run's triggerer undo a four-eyes call (`pipelines.reversal.authorize_undo`). The
triggerer may still answer their own run's human tasks (who may answer is the task's business);
it only adds them, once more, to those kept from approving.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pipelines.errors import FourEyesViolation
from pipelines.runtime import Runtime
from storage.human_answers import answers_before


class Exclusion(NamedTuple):
    user: str
    why: str  # "triggered run run_…", "answered task task_… (classify#1) earlier in run run_…"


def excluded_deciders(rt: Runtime, approval: Any) -> list[Exclusion]:
    """Who four-eyes keeps from deciding `approval` (empty when the tool has it off)."""
    if not approval.four_eyes:
        return []
    found: list[Exclusion] = []
    if approval.trigger_user:
        found.append(Exclusion(approval.trigger_user, f"triggered run {approval.run_id}"))
    with rt.db.transaction() as conn:
        earlier = answers_before(conn, approval.run_id, approval.call_id)
    for answer in earlier:
        found.append(
            Exclusion(
                answer.answered_by,
                f"answered task {answer.task_id} ({answer.call_key}) earlier in run "
                f"{approval.run_id}",
            )
        )
    return found


def check_four_eyes(rt: Runtime, approval: Any, user: str, approvers: list[str]) -> None:
    """Raise `FourEyesViolation` (not yet audited: the caller refuses) when `user` is kept out."""
    for exclusion in excluded_deciders(rt, approval):
        if exclusion.user != user:
            continue
        others = f"; ask another approver from {', '.join(approvers)}" if approvers else ""
        own = "its own" if exclusion.why.startswith("triggered") else "its"
        raise FourEyesViolation(
            "{user} " + f"{exclusion.why} and may not approve {own} {approval.tool} (four-eyes)"
            f"{others}",
            people={"user": user},
        )


def check_undo_four_eyes(
    *, four_eyes: bool, trigger_user: str | None, run_id: str, tool: str, call_id: str, user: str
) -> None:
    """The run's triggerer may not undo its four-eyes call either."""
    if four_eyes and trigger_user is not None and user == trigger_user:
        raise FourEyesViolation(
            "{user} "
            + f"triggered run {run_id} and may not undo its {tool} (call {call_id}; four-eyes); "
            "ask one of the tool's approvers or an operator",
            people={"user": user},
        )
