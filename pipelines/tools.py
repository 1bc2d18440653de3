"""`@tool`: a function that touches the world, declared with its gates.

A tool takes its pydantic arguments and an idempotency key and returns a pydantic result. The
declaration carries what the engine enforces: its kind, rate limit, approval rule, approvers,
four-eyes, expiry, and how to reverse it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from pipelines.durations import parse_duration, parse_rate
from pipelines.errors import (
    ApproversRequired,
    BadEditable,
    BadEscalation,
    BadQuorum,
    DuplicateName,
)
from pipelines.sensitive import sensitive_fields
from pipelines.validator import Validator
from storage.calls import RateLimit

ToolKind = Literal["read", "write", "send", "spend"]
TOOL_KINDS: tuple[str, ...] = ("read", "write", "send", "spend")
# Money and messages leave the building: the run's author may not approve their own call of
# these kinds unless the tool says `four_eyes=False`.
FOUR_EYES_KINDS: tuple[str, ...] = ("send", "spend")


@dataclass(frozen=True)
class When:
    """An approval rule on the arguments: approval is needed when the predicate is true."""

    predicate: Callable[[Any], bool]
    description: str = ""

    def __str__(self) -> str:
        return f"when {self.description}" if self.description else "when a condition holds"


def when(predicate: Callable[[Any], bool], description: str = "") -> When:
    return When(predicate, description)


ApprovalRule = Literal["always", "never"] | When | Validator


@dataclass(eq=False)
class Tool:
    name: str
    kind: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    result_adapter: TypeAdapter[Any]
    approval: ApprovalRule
    approvers: tuple[str, ...] = ()
    four_eyes: bool = False
    expires: timedelta | None = None
    on_expiry: Literal["reject", "cancel"] = "reject"
    rate_limit: RateLimit | None = None
    on_rate_limit: Literal["wait", "reject"] = "wait"
    reverse: Callable[..., Any] | None = None
    idempotent: bool = False
    # What an eval continues on instead of calling a write/send/spend tool (`gatehouse eval`).
    simulate: Callable[[Any], Any] | None = None
    description: str = ""
    approvals_channel: str | None = None
    rate_limit_text: str | None = field(default=None)
    # A few facts for the approval card, from the run's earlier recorded results
    # (`pipelines.tool_context`): `context(args, reads)`.
    context: Callable[..., Any] | None = None
    # While an approval waits: remind its approvers after `remind_after`; after
    # `escalate_after`, add `escalate_to` to them (pipelines/approval_nudges.py).
    remind_after: timedelta | None = None
    escalate_after: timedelta | None = None
    escalate_to: tuple[str, ...] = ()
    # `summary(args, result) -> str`: the outcome in the tool's own words, for its card.
    summary: Callable[[Any, Any], str] | None = None
    # Arguments an approver may change before approving (`Edit & approve`,
    # pipelines/approval_edits.py).
    editable: tuple[str, ...] = ()
    # How many distinct people must approve before the call runs (pipelines/quorum.py).
    approvals_required: int = 1

    def __call__(self, args: Any, *, idempotency_key: str) -> Any:
        """Call the tool directly, ungated (for tests and scripts that know what they do)."""
        return self.fn(self.coerce_args(args), idempotency_key=idempotency_key)

    def coerce_args(self, args: Any) -> BaseModel:
        if isinstance(args, self.args_model):
            return args
        return self.args_model.model_validate(args)

    def needs_approval(self, args: BaseModel) -> bool:
        if self.approval == "always":
            return True
        if self.approval == "never":
            return False
        if isinstance(self.approval, Validator):
            return True  # the validator judges every call; it decides whether a person must
        return bool(self.approval.predicate(args))

    def runs_in_eval(self, args: BaseModel) -> bool:
        """An eval executes only reads no approval rule stops; every other call is recorded as
        "would call" and, unless the tool has `simulate`, ends the case there."""
        return self.kind == "read" and not self.needs_approval(args)

    @property
    def gated(self) -> bool:
        return self.approval != "never"


def _asks_a_person(rule: ApprovalRule) -> bool:
    """Can this rule put a card in front of a person? A validator with `then="reject"` never
    does (what it cannot approve it rejects), so it needs no approvers."""
    if rule == "never":
        return False
    return not (isinstance(rule, Validator) and rule.then == "reject")


def _rule_words(rule: ApprovalRule) -> str:
    return f'"{rule}"' if isinstance(rule, str) else str(rule)


_TOOLS: dict[str, Tool] = {}


def registered_tools() -> dict[str, Tool]:
    return dict(_TOOLS)


def lookup_tool(name: str) -> Tool | None:
    return _TOOLS.get(name)


def _args_model(fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.KEYWORD_ONLY]
    if not params or not isinstance(hints.get(params[0].name), type):
        raise TypeError(
            f"tool {fn.__name__}: its first parameter must be annotated with a pydantic model"
        )
    model: type[BaseModel] = hints[params[0].name]
    if not issubclass(model, BaseModel):
        raise TypeError(f"tool {fn.__name__}: {model.__name__} is not a pydantic model")
    if "idempotency_key" not in inspect.signature(fn).parameters:
        raise TypeError(f"tool {fn.__name__}: add a keyword-only `idempotency_key: str` parameter")
    return model


def _nudges(
    remind_after: str | timedelta | None,
    escalate_after: str | timedelta | None,
    escalate_to: list[str] | tuple[str, ...] | None,
) -> tuple[timedelta | None, timedelta | None, tuple[str, ...]]:
    """Parse and check the reminder and escalation arguments together."""
    remind = parse_duration(remind_after) if remind_after is not None else None
    escalate = parse_duration(escalate_after) if escalate_after is not None else None
    if isinstance(escalate_to, str):
        raise BadEscalation(
            f'escalate_to={escalate_to!r}: give a list, escalate_to=["{escalate_to}"]'
        )
    targets = tuple(escalate_to or ())
    for after, label in ((remind, "remind_after"), (escalate, "escalate_after")):
        if after is not None and after <= timedelta(0):
            raise BadEscalation(f"{label} must be a positive duration, e.g. 2h")
    if escalate is not None and not targets:
        raise BadEscalation(
            "escalate_after is set but escalate_to names nobody: say who is added as approvers, "
            'e.g. escalate_to=["@leads"]'
        )
    if targets and escalate is None:
        raise BadEscalation(
            'escalate_to is set without escalate_after: say when to escalate, e.g. escalate_after="6h"'
        )
    if remind is not None and escalate is not None and escalate <= remind:
        raise BadEscalation(
            f"escalate_after ({escalate}) must come after remind_after ({remind}): the "
            "approvers are reminded first, then the escalation group is added"
        )
    return remind, escalate, targets


def _editable(
    tool_name: str,
    args_model: type[BaseModel],
    rule: ApprovalRule,
    editable: list[str] | tuple[str, ...] | None,
) -> tuple[str, ...]:
    """Check `editable=` against the argument model when the tool is declared."""
    if editable is None:
        return ()
    if isinstance(editable, str):
        raise BadEditable(
            f'tool {tool_name!r}: editable={editable!r}: give a list, editable=["{editable}"]'
        )
    names = tuple(dict.fromkeys(editable))
    if not names:
        raise BadEditable(f"tool {tool_name!r}: editable=[] names no field; leave it out")
    fields = args_model.model_fields
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise BadEditable(
            f"tool {tool_name!r}: editable names {', '.join(map(repr, unknown))}, which "
            f"{args_model.__name__} does not have; its fields: {', '.join(fields) or 'none'}"
        )
    sealed = [n for n in names if n in sensitive_fields(args_model)]
    if sealed:
        raise BadEditable(
            f"tool {tool_name!r}: {', '.join(map(repr, sealed))} is Sensitive and cannot be "
            "editable: the form would show its value in clear"
        )
    if not _asks_a_person(rule):
        raise BadEditable(
            f"tool {tool_name!r}: editable needs an approval a person gives, and approval "
            f"{_rule_words(rule)} never asks one"
        )
    return names


def _check_quorum(
    tool_name: str, required: object, rule: ApprovalRule, approvers: tuple[str, ...]
) -> None:
    """`approvals_required` must be a whole number a gate can reach. Only a fixed list of user
    ids (approvers and escalate_to) is counted: a group's members, and who four-eyes keeps out,
    are known at decision time only."""
    if isinstance(required, bool) or not isinstance(required, int) or required < 1:
        raise BadQuorum(
            f"tool {tool_name!r}: approvals_required={required!r} must be a whole number of "
            "at least 1 (how many distinct people must approve)"
        )
    if required == 1:
        return
    if not _asks_a_person(rule):
        raise BadQuorum(
            f"tool {tool_name!r}: approvals_required={required} needs an approval people give, "
            f"and approval {_rule_words(rule)} never asks one"
        )
    named_users = [a for a in approvers if a != "*" and not a.startswith("@")]
    if len(named_users) == len(approvers) and len(set(named_users)) < required:
        raise BadQuorum(
            f"tool {tool_name!r}: approvals_required={required} but approvers names only "
            f"{len(set(named_users))} ({', '.join(dict.fromkeys(named_users))}): add approvers "
            "or a @group, or lower approvals_required (four-eyes may keep one more out)"
        )


def tool(
    *,
    kind: ToolKind,
    name: str | None = None,
    rate_limit: str | None = None,
    on_rate_limit: Literal["wait", "reject"] = "wait",
    approval: ApprovalRule | None = None,
    approvers: list[str] | tuple[str, ...] | Literal["*"] | None = None,
    four_eyes: bool | None = None,
    expires: str | timedelta | None = None,
    on_expiry: Literal["reject", "cancel"] = "reject",
    reverse: Callable[..., Any] | None = None,
    idempotent: bool | None = None,
    approvals_channel: str | None = None,
    simulate: Callable[[Any], Any] | None = None,
    context: Callable[..., Any] | None = None,
    remind_after: str | timedelta | None = None,
    escalate_after: str | timedelta | None = None,
    escalate_to: list[str] | tuple[str, ...] | None = None,
    summary: Callable[[Any, Any], str] | None = None,
    editable: list[str] | tuple[str, ...] | None = None,
    approvals_required: int = 1,
) -> Callable[[Callable[..., Any]], Tool]:
    """Declare a tool. Approval defaults to "always" for write/send/spend and "never" for read;
    read tools default to idempotent (a crash mid-call just reads again). `simulate(args) ->
    result`: in an eval, the call is recorded as "would call" and the pipeline goes on with
    this result instead of stopping there. `context(args, reads)`: a few facts for the approval
    card from what the run already read (`pipelines.tool_context`). `summary(args, result) ->
    str`: one short line the approval card shows once the call succeeded ("refunded 180.00 EUR,
    refund 45"); without it the card shows the result's fields.

    A tool a person may have to approve names who (`approvers=[...]`, or `"*"` for anyone,
    spelled out): an unnamed list used to mean "anyone", the trigger's own author included.
    `four_eyes` defaults to on for `spend` and `send` tools.

    `remind_after="2h"`: an approval still undecided then gets a reminder in its card's thread,
    naming the approvers. `escalate_after="6h", escalate_to=["@leads"]`: still undecided then,
    `@leads` become approvers too (the usual rules, four-eyes included, apply to them).

    `editable=["amount", "recipient"]`: the approval card gets an Edit & approve button; the
    approver may change those arguments (validated by the argument model), and the call runs
    with them (pipelines/approval_edits.py).

    `approvals_required=2`: the call runs once two distinct approvers approved (each one an
    approver, four-eyes applying to each); one rejection rejects."""
    if kind not in TOOL_KINDS:
        raise ValueError(f"tool kind {kind!r} is not one of {', '.join(TOOL_KINDS)}")
    if on_expiry not in ("reject", "cancel"):
        raise ValueError(f"on_expiry={on_expiry!r}: use 'reject' or 'cancel'")
    if on_rate_limit not in ("wait", "reject"):
        raise ValueError(f"on_rate_limit={on_rate_limit!r}: use 'wait' or 'reject'")
    rule: ApprovalRule = (
        approval if approval is not None else ("never" if kind == "read" else "always")
    )
    if not isinstance(rule, When | Validator) and rule not in ("always", "never"):
        raise ValueError(
            f"approval={rule!r}: use 'always', 'never', when(predicate) or validator(...)"
        )
    if isinstance(approvers, str) and approvers != "*":
        raise ValueError(f'approvers={approvers!r}: give a list, approvers=["{approvers}"]')
    approver_list: tuple[str, ...] = (
        ("*",) if approvers == "*" else tuple(approvers) if approvers is not None else ()
    )
    remind, escalate, escalate_list = _nudges(remind_after, escalate_after, escalate_to)
    deadline = parse_duration(expires) if expires is not None else None
    for after, label in ((remind, "remind_after"), (escalate, "escalate_after")):
        if after is not None and deadline is not None and after >= deadline:
            raise BadEscalation(
                f"{label} ({after}) is not before expires ({deadline}): the approval would "
                "expire first; shorten it or lengthen expires"
            )
    limit = None
    if rate_limit is not None:
        count, period = parse_rate(rate_limit)
        limit = RateLimit(count, period)

    def register(fn: Callable[..., Any]) -> Tool:
        args_model = _args_model(fn)
        result_type = typing.get_type_hints(fn).get("return", Any)
        tool_name = name or fn.__name__
        if not approver_list and _asks_a_person(rule):
            raise ApproversRequired(
                f"tool {tool_name!r} ({kind}, approval {_rule_words(rule)}) names no approvers: "
                'say who may approve it, e.g. approvers=["@finance-leads", "U123ABC"] (user '
                'ids or @groups), or approvers="*" to let anyone approve; approval="never" '
                "if it needs no approval"
            )
        _check_quorum(tool_name, approvals_required, rule, (*approver_list, *escalate_list))
        if editable and approvals_required > 1:
            # An edit given with an early vote would change what the earlier voters approved
            # (or be dropped): refuse the pair rather than run arguments nobody approved in full.
            raise BadEditable(
                f"tool {tool_name!r}: editable cannot be combined with approvals_required="
                f"{approvals_required}; an edit would change what the other approvers approved. "
                "Keep one of the two"
            )
        declared = Tool(
            name=tool_name,
            kind=kind,
            fn=fn,
            args_model=args_model,
            result_adapter=TypeAdapter(result_type),
            approval=rule,
            approvers=approver_list,
            four_eyes=four_eyes if four_eyes is not None else kind in FOUR_EYES_KINDS,
            expires=parse_duration(expires) if expires is not None else None,
            on_expiry=on_expiry,
            rate_limit=limit,
            on_rate_limit=on_rate_limit,
            reverse=reverse,
            idempotent=idempotent if idempotent is not None else kind == "read",
            description=(inspect.getdoc(fn) or "").split("\n")[0],
            approvals_channel=approvals_channel,
            rate_limit_text=rate_limit,
            simulate=simulate,
            context=context,
            remind_after=remind,
            escalate_after=escalate,
            escalate_to=escalate_list,
            summary=summary,
            editable=_editable(tool_name, args_model, rule, editable),
            approvals_required=approvals_required,
        )
        if (remind or escalate) and not _asks_a_person(rule):
            raise BadEscalation(
                f"tool {tool_name!r}: remind_after/escalate_after need an approval a person "
                f"gives, and approval {_rule_words(rule)} never asks one"
            )
        existing = _TOOLS.get(tool_name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise DuplicateName(
                f"tool {tool_name!r} is declared twice ({existing.fn.__module__} and "
                f"{fn.__module__}); give one of them name=..."
            )
        _TOOLS[tool_name] = declared
        return declared

    return register
