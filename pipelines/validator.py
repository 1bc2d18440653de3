"""A second model as a gate: `approval=validator(...)` asks an independent, scoped model call to
judge a tool call before it runs.

The verdict (approve | reject | unsure, a reason, a confidence) is recorded as an LLM call of the
run, just before the tool call, under the key `validator:<tool>#n`: a resume or a replay reads the
recorded verdict and never asks again, and its tokens and cost count in the run like any model
call. What the engine does with a verdict is a pure function of it (`judge`), so a replay after a
crash decides the same way:

- approve at or above `min_confidence`: the call proceeds, audited `validator.approved`;
- reject at or above the bar: `ActionRejected` with the validator's reason;
- anything else (unsure, under the bar, no valid answer, the model unreachable or misconfigured,
  no model configured): `then="human"` posts the normal approval card with the verdict on it;
  `then="reject"` rejects the call.

A confident reject is final; a shaky one is not: it goes to a person like "unsure" (with
`then="human"`), who may still approve.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipelines.sensitive import mask

CALL_PREFIX = "validator:"
VALIDATOR_TASK = "classify"
PROMPT_VALUE_LIMIT = 4000
EARLIER_CALLS_SHOWN = 8

Then = Literal["human", "reject"]
Outcome = Literal["approve", "reject", "human"]


@dataclass(frozen=True)
class Validator:
    """An approval rule: a validation model judges every call; see the module docstring."""

    instructions: str
    model: str | None = None
    min_confidence: float = 0.8
    then: Then = "human"

    def __str__(self) -> str:
        bar = f"confidence ≥ {self.min_confidence:g}"
        fallback = "else a person" if self.then == "human" else "else rejected"
        return f"validator ({self.model or 'default model'}, {bar}, {fallback})"


def validator(
    instructions: str,
    *,
    model: str | None = None,
    min_confidence: float = 0.8,
    then: Then = "human",
) -> Validator:
    """`@tool(approval=validator("Reject emails that promise discounts", then="human"))`."""
    if not instructions.strip():
        raise ValueError("validator(instructions=...) needs the rules the validator judges by")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"validator min_confidence={min_confidence!r}: use a number in 0..1")
    if then not in ("human", "reject"):
        raise ValueError(f"validator then={then!r}: use 'human' or 'reject'")
    return Validator(instructions.strip(), model, float(min_confidence), then)


class ValidatorVerdict(BaseModel):
    """What the validation model answers."""

    verdict: Literal["approve", "reject", "unsure"] = Field(
        description="approve: the action should go ahead; reject: it must not; "
        "unsure: a person should decide"
    )
    reason: str = Field(max_length=2000, description="Why, in one or two sentences")
    confidence: float = Field(ge=0, le=1, description="How sure the verdict is, 0..1")


@dataclass(frozen=True)
class Judgement:
    """The engine's decision from one verdict (or from the lack of one)."""

    outcome: Outcome
    model: str | None
    verdict: str | None
    reason: str
    confidence: float | None
    min_confidence: float
    failure: str | None = None

    @property
    def actor(self) -> str:
        """Who the audit log names: `validator (gpt-4o-mini)`."""
        return f"validator ({self.model or 'no model'})"

    @property
    def summary(self) -> str:
        """One line for a card, a rejection or the audit: what the validator said and why."""
        if self.verdict is None:
            return f"{self.actor} gave no verdict: {self.reason}"
        said = f"{self.actor} said {self.verdict}"
        if self.confidence is not None:
            said += f" (confidence {self.confidence:.2f}"
            if self.confidence < self.min_confidence:
                said += f", under the bar of {self.min_confidence:g}"
            said += ")"
        return f"{said}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "model": self.model,
            "verdict": self.verdict,
            "reason": self.reason,
            "confidence": self.confidence,
            "min_confidence": self.min_confidence,
            "failure": self.failure,
            "summary": self.summary,
        }


def call_name(tool_name: str) -> str:
    """The validator's call name in the run's record, before the tool's own call."""
    return f"{CALL_PREFIX}{tool_name}"


def is_validator_call(name: str) -> bool:
    return name.startswith(CALL_PREFIX)


def judge(
    rule: Validator,
    *,
    model: str | None,
    verdict: ValidatorVerdict | None,
    failure: str | None = None,
    failure_reason: str | None = None,
) -> Judgement:
    """What to do with the verdict: see the module docstring."""
    if verdict is None:
        reason = failure_reason or "no usable verdict"
        outcome: Outcome = "human" if rule.then == "human" else "reject"
        return Judgement(outcome, model, None, reason, None, rule.min_confidence, failure)
    sure = verdict.confidence >= rule.min_confidence
    if sure and verdict.verdict == "approve":
        outcome = "approve"
    elif sure and verdict.verdict == "reject":
        outcome = "reject"
    else:
        outcome = "human" if rule.then == "human" else "reject"
    return Judgement(
        outcome,
        model,
        verdict.verdict,
        verdict.reason,
        verdict.confidence,
        rule.min_confidence,
        failure,
    )


SYSTEM = """You are an independent reviewer. An automated workflow wants to run the action below; \
before it runs, judge whether it should. You did not write the workflow and you owe it nothing: \
approve only when the action clearly follows the rules, reject when it clearly breaks them, and \
answer unsure when the information is not enough to tell. Values shown as •••• are sensitive and \
hidden from you on purpose.

The rules for this action:
{instructions}"""


def system_text(rule: Validator) -> str:
    return SYSTEM.format(instructions=rule.instructions)


def _shown(value: Any) -> str:
    text = json.dumps(mask(value), ensure_ascii=False, default=str, sort_keys=True)
    if len(text) > PROMPT_VALUE_LIMIT:
        return text[:PROMPT_VALUE_LIMIT] + f"… ({len(text) - PROMPT_VALUE_LIMIT} more characters)"
    return text


def prompt(
    *,
    tool_name: str,
    kind: str,
    description: str,
    args: Any,
    pipeline: str,
    run_input: Any,
    earlier: Iterable[tuple[str, str, Any]],
) -> str:
    """The action and the run's context, sensitive values masked. `earlier`: (kind, name,
    output) of the run's calls before this one; the last few are shown."""
    lines = [
        f"Action: {tool_name} (a {kind} tool)" + (f": {description}" if description else ""),
        f"Arguments: {_shown(args)}",
        "",
        f"Workflow: {pipeline}",
        f"Its input: {_shown(run_input)}",
    ]
    shown = list(earlier)[-EARLIER_CALLS_SHOWN:]
    if shown:
        lines.append("What it did before this action:")
        lines.extend(f"- {kind} {name}: {_shown(output)}" for kind, name, output in shown)
    return "\n".join(lines)
