"""Who may do what, checked on the engine's side of every entry point (Slack, the CLI, code), and
the one way a refusal is recorded: an audit entry `refused` (actor, action, target, reason),
then the `NotAuthorized` error the caller shows (an ephemeral in Slack, `error:` in the CLI).

| action                   | who may                                                    | nobody listed, open | nobody listed, production |
|--------------------------|------------------------------------------------------------|---------------------|---------------------------|
| approve, reject          | the gate's approvers; with four-eyes not the run's trigger | anyone              | nobody                    |
| answer                   | the task's assignees                                       | anyone              | the pipeline's triggerers and the operators |
| trigger                  | `GATEHOUSE_TRIGGERERS[pipeline]`, else `[…]["*"]`          | anyone              | nobody                    |
| undo                     | the tool's approvers and `GATEHOUSE_OPERATORS`             | anyone              | nobody                    |
| cancel, retry, resolve   | the run's tools' approvers and `GATEHOUSE_OPERATORS`       | anyone              | nobody                    |
| replay, export, evaluate | `GATEHOUSE_OPERATORS`                                      | anyone              | nobody                    |

Entries are user ids, `@group` handles (resolved by the `ApproverDirectory`) or `"*"`: anyone,
written out as a decision. What an empty list means is the policy's `open_by_default`:
**open** (True) for a `Gatehouse(url)` built in code, the CLI, tests, the sandbox and the demo,
so that nothing needs configuring to try it; **production** (False) for `gatehouse serve`
against a real Slack, which also refuses to start until `GATEHOUSE_TRIGGERERS` and
`GATEHOUSE_OPERATORS` are set (bot/serve.py). A gated tool must name its approvers
(pipelines/tools.py), so "nobody listed" for approvals only happens for requests recorded
before that rule.

A trigger with no user is a system trigger (a signed webhook, a schedule, code) and is not
checked here; replay and export with no user are a local operator's (the CLI, which holds the
database credentials and could read the same records directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import structlog

from pipelines.directory import lookup_group
from pipelines.errors import NotAnOperator, NotATriggerer, NotAuthorized
from storage.audit import append_audit

if TYPE_CHECKING:
    from pipelines.runtime import Runtime

log = structlog.get_logger()

# An entry that lets anyone act: written out, it is a decision, where an empty list is not.
ANYONE = "*"


@dataclass(frozen=True)
class Authorization:
    """The configured lists (the per-gate and per-task ones live on the gate and the task) and
    what a list with nobody on it means: anyone when `open_by_default`, else nobody."""

    triggerers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    operators: Sequence[str] = ()
    open_by_default: bool = True

    def triggerers_of(self, pipeline: str) -> list[str]:
        return list(self.triggerers.get(pipeline, self.triggerers.get("*", ())))

    def answerers(self, assignees: Sequence[str], pipeline: str | None) -> list[str]:
        """Who may answer a task naming `assignees`: them; with none, anyone (`["*"]`) under the
        open policy, and in production the pipeline's triggerers and the operators, the people
        trusted with the run anyway, not whoever can click. Cards and the answer check both read
        this, so what a card says is what the check enforces."""
        if assignees:
            return list(assignees)
        if self.open_by_default:
            return ["*"]
        return [*self.triggerers_of(pipeline or ""), *self.operators]


def may_act(rt: Runtime, user: str, allowed: Sequence[str]) -> bool:
    """Is `user` one of `allowed` (user ids, `@group` names resolved by the directory, or `"*"`:
    anyone)? An empty list allows everybody under the open policy and nobody in production."""
    if ANYONE in allowed:
        return True
    if not allowed:
        return rt.authorization.open_by_default
    for entry in allowed:
        if entry.startswith("@"):
            if user in rt.directory.members(entry[1:]):
                return True
        elif entry == user:
            return True
    return False


def groups_checked(rt: Runtime, allowed: Sequence[str]) -> str:
    """For a refusal: what the directory found for each `@group` of `allowed`, source by source
    (`; @finance-leads: 2 in GATEHOUSE_GROUPS, Slack user groups could not be asked (…)`), so a
    person refused can tell a missing membership from a source that was not asked."""
    groups = [entry for entry in allowed if entry.startswith("@")]
    found = [lookup_group(rt.directory, group).describe() for group in groups]
    return f" ({'; '.join(found)})" if found else ""


def refuse(
    rt: Runtime,
    refusal: NotAuthorized,
    *,
    actor: str | None,
    action: str,
    target: str,
    run_id: str | None = None,
    call_id: str | None = None,
    tool: str | None = None,
    approval_id: str | None = None,
) -> NoReturn:
    """Record the refusal in the audit log (its own transaction: nothing else was written),
    log it, and raise it."""
    with rt.db.transaction() as conn:
        append_audit(
            conn,
            event="refused",
            at=rt.clock.now(),
            actor=actor,
            run_id=run_id,
            call_id=call_id,
            tool=tool,
            approval_id=approval_id,
            detail={"action": action, "target": target, "reason": str(refusal)},
        )
    log.warning("authorization.refused", action=action, target=target, user=actor)
    raise refusal


def authorize_trigger(rt: Runtime, user: str | None, pipeline: str) -> None:
    allowed = rt.authorization.triggerers_of(pipeline)
    if user is None or may_act(rt, user, allowed):
        return
    refuse(
        rt,
        NotATriggerer(
            "{user} " + f"may not run {pipeline}; who may: {', '.join(allowed) or 'nobody'} "
            "(GATEHOUSE_TRIGGERERS)" + groups_checked(rt, allowed),
            people={"user": user},
        ),
        actor=user,
        action="trigger",
        target=pipeline,
    )


def authorize_operator(
    rt: Runtime, user: str | None, action: str, target: str, *, run_id: str | None = None
) -> None:
    """Replay and export: the operators (`GATEHOUSE_OPERATORS`) only, when any are listed."""
    operators = list(rt.authorization.operators)
    if user is None or may_act(rt, user, operators):
        return
    refuse(
        rt,
        NotAnOperator(
            "{user} " + f"may not {action} {target}; operators: {', '.join(operators) or 'nobody'} "
            "(GATEHOUSE_OPERATORS)" + groups_checked(rt, operators),
            people={"user": user},
        ),
        actor=user,
        action=action,
        target=target,
        run_id=run_id,
    )
