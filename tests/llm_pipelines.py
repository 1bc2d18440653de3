"""Pipelines the LLM-call behaviour tests drive (tests/test_llm.py).

Every name starts with `l_`: registration is global and other test modules register their own.
How a pipeline calls the model (the bar, the attempts, raise or human) comes from its input, so
the tests need no global switches; `executions` counts the steps around the model calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipelines import Context, pipeline
from pipelines.errors import CannotAnswer

executions: Counter[str] = Counter()


def reset() -> None:
    executions.clear()


def count(name: str) -> str:
    executions[name] += 1
    return name


class Ticket(BaseModel):
    text: str
    min_confidence: float | None = None
    max_attempts: int = 3
    on_fail: Literal["human", "raise"] = "human"
    model: str | None = None
    system: str | None = None


class Label(BaseModel):
    kind: Literal["refund", "question", "bug"]
    confidence: float = Field(ge=0, le=1)


class LeadMessage(BaseModel):
    message: str
    min_confidence: float | None = None  # Lead has no confidence field: a misuse


class Lead(BaseModel):
    company: str
    role: str


class Intro(BaseModel):
    subject: str
    body: str


class Confirmation(BaseModel):
    ok: bool


@pipeline("l_classify", input=Ticket)
def l_classify(ctx: Context, ticket: Ticket) -> dict[str, Any]:
    """One classification between two counted steps; `on_fail="raise"` is handled here."""
    ctx.step("l_before", count, "before_llm")
    try:
        label = ctx.llm(
            "classify",
            task="classify",
            system=ticket.system,
            prompt=f"Ticket: {ticket.text}",
            output=Label,
            model=ticket.model,
            min_confidence=ticket.min_confidence,
            max_attempts=ticket.max_attempts,
            on_fail=ticket.on_fail,
        )
    except CannotAnswer as exc:
        return {"cannot_answer": str(exc)}
    ctx.step("l_after", count, "after_llm")
    return {"kind": label.kind, "confidence": label.confidence}


@pipeline("l_classify_then_confirm", input=Ticket)
def l_classify_then_confirm(ctx: Context, ticket: Ticket) -> dict[str, Any]:
    """A model call, then a human question: resuming after the answer replays the model call."""
    label = ctx.llm("classify", task="classify", prompt=ticket.text, output=Label)
    confirmation = ctx.ask_human("confirm", f"Is this a {label.kind}?", output=Confirmation)
    return {"kind": label.kind, "confirmed": confirmation.ok}


@pipeline("l_classify_or_confirm", input=Ticket)
def l_classify_or_confirm(ctx: Context, ticket: Ticket) -> dict[str, Any]:
    """Handles CannotAnswer itself, then asks a human: the resume replays the failed call."""
    try:
        label = ctx.llm(
            "classify", task="classify", prompt=ticket.text, output=Label, on_fail="raise"
        )
        reason = f"classified as {label.kind}"
    except CannotAnswer as exc:
        reason = str(exc)
    confirmation = ctx.ask_human("confirm", reason, output=Confirmation)
    return {"reason": reason, "confirmed": confirmation.ok}


@pipeline("l_qualify", input=LeadMessage)
def l_qualify(ctx: Context, lead: LeadMessage) -> dict[str, Any]:
    """Two model calls in a row (extract, then draft), for replays that compare call by call."""
    extracted = ctx.llm(
        "extract_lead",
        task="extract",
        prompt=lead.message,
        output=Lead,
        min_confidence=lead.min_confidence,
    )
    intro = ctx.llm(
        "draft_intro",
        task="draft",
        prompt=f"Write a short intro email to the {extracted.role} of {extracted.company}.",
        output=Intro,
    )
    return {"company": extracted.company, "subject": intro.subject}
