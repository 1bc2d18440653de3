"""Example pipeline: qualify an inbound sales lead, in four steps a test can check one by one.

1. extract (ctx.llm): company, role and intent signal from the lead's message;
2. look up (read tool): the company's firmographics in the DEMO CONNECTOR's table;
3. score (step): a deterministic ICP rubric, `score_lead`, written out below;
4. route: high → an intro email (send tool: a validation model reads it first and what it does
   not clearly approve goes to @sales-leads; 10/hour, recallable with `gatehouse undo`);
   mid → the CRM (write tool, no approval, idempotent); low → archived.

With no model configured the extraction becomes a human task, so the demo works without one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from pipelines import ActionRejected, Context, pipeline, tool, validator, webhook
from pipelines.catalog.connectors import demo_crm
from pipelines.runtime import current_clock

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
EXTRACT_MIN_CONFIDENCE = 0.6  # a shakier reading goes to a person before anyone is emailed

Intent = Literal["high", "medium", "low", "none"]
Tier = Literal["high", "mid", "low"]

# -- the ICP rubric (see `score_lead`) ----------------------------------------------------

INTENT_POINTS: dict[str, int] = {"high": 30, "medium": 15, "low": 5, "none": 0}
DECISION_MAKER_POINTS = 20
MANAGER_POINTS = 10
DECISION_MAKER_TITLE = re.compile(
    r"\b(ceo|cto|cfo|coo|cio|ciso|cpo|cro|chief|founder|cofounder|owner|president|"
    r"vp|svp|evp|head|director)\b",
    re.IGNORECASE,
)
MANAGER_TITLE = re.compile(r"\b(manager|lead|principal|architect)\b", re.IGNORECASE)
CORE_EMPLOYEES = (200, 2_000)  # inclusive: 20 points
NEAR_EMPLOYEES = (50, 10_000)  # inclusive, outside the core: 10 points
CORE_EMPLOYEE_POINTS = 20
NEAR_EMPLOYEE_POINTS = 10
TARGET_INDUSTRIES = frozenset({"software", "fintech", "e-commerce"})
ADJACENT_INDUSTRIES = frozenset({"healthcare", "logistics", "retail", "media"})
TARGET_INDUSTRY_POINTS = 15
ADJACENT_INDUSTRY_POINTS = 5
REVENUE_POINTS: dict[str, int] = {
    "<1M": 0,
    "1M-10M": 5,
    "10M-50M": 10,
    "50M-250M": 10,
    "250M-1B": 5,
    "1B+": 0,
}
SERVED_COUNTRIES = frozenset(
    {"US", "CA", "GB", "IE", "DE", "FR", "NL", "BE", "LU", "DK", "SE", "NO", "FI", "ES", "PT"}
    | {"IT", "AT", "CH", "PL"}
)
SERVED_COUNTRY_POINTS = 5
HIGH_TIER_MIN = 70
MID_TIER_MIN = 40


class InboundLead(BaseModel):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320, description="The sender's address")
    name: str = Field(default="", max_length=200, description="The sender's name, if known")
    message: str = Field(min_length=1, max_length=5000, description="What they wrote")


class LeadSignals(BaseModel):
    """What the model (or a person) reads out of the lead's message."""

    company: str = Field(
        max_length=200, description="The sender's company as written; empty if not stated"
    )
    role: str = Field(
        max_length=200, description="The sender's job title as written; empty if not stated"
    )
    intent: Intent = Field(
        description=(
            "high: asks for a demo, pricing, a trial or a call, or names a budget or timeline; "
            "medium: evaluating or comparing tools for a concrete problem; "
            "low: general interest, no concrete need; "
            "none: not a prospective buyer (job seeker, vendor pitch, support question, spam)"
        )
    )
    confidence: float = Field(ge=0, le=1, description="How sure the reading is, 0..1")


class CompanyLookup(BaseModel):
    company: str
    email_domain: str | None = None


class Firmographics(BaseModel):
    domain: str
    name: str
    employees: int
    industry: str
    country: str
    revenue_band: str


class LeadScore(BaseModel):
    points: int
    tier: Tier
    reasons: list[str]


class IntroEmail(BaseModel):
    to: str = Field(pattern=EMAIL_PATTERN)
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1)


class SentEmail(BaseModel):
    email_id: int
    to: str
    status: str


class CrmLeadArgs(BaseModel):
    email: str
    company: str
    role: str
    score: int
    note: str = ""


class CrmLead(BaseModel):
    lead_id: int
    status: str


class LeadOutcome(BaseModel):
    action: Literal["emailed", "added_to_crm", "archived"]
    company: str
    points: int
    tier: Tier
    message: str
    email_id: int | None = None
    crm_lead_id: int | None = None


# -- step 3: the rubric --------------------------------------------------------------------


def role_seniority(role: str) -> Literal["decision_maker", "manager", "other"]:
    """By whole words of the title: "Director" is a decision maker, and does not contain "cto"."""
    if DECISION_MAKER_TITLE.search(role):
        return "decision_maker"
    if MANAGER_TITLE.search(role):
        return "manager"
    return "other"


def score_lead(signals: LeadSignals, firmographics: Firmographics | None) -> LeadScore:
    """Score a lead against the ideal customer profile (ICP), out of 100.

    The ICP: a B2B software, fintech or e-commerce company of 200-2,000 people, with 10M-250M
    revenue, in a market we serve, whose contact can buy and wants to.

    | criterion        | points                                                              |
    |------------------|---------------------------------------------------------------------|
    | intent           | high 30 · medium 15 · low 5 · none 0                                |
    | role             | decision maker (C-level, founder, owner, president, VP, head,       |
    |                  | director) 20 · manager (manager, lead, principal, architect) 10 · 0 |
    | employees        | 200-2,000 → 20 · 50-199 or 2,001-10,000 → 10 · otherwise 0          |
    | industry         | software, fintech, e-commerce 15 · healthcare, logistics, retail,   |
    |                  | media 5 · otherwise 0                                               |
    | revenue band     | 10M-50M, 50M-250M 10 · 1M-10M, 250M-1B 5 · <1M, 1B+, unknown 0      |
    | country          | a served market (US, CA and 17 European countries) 5 · otherwise 0  |

    A company missing from the firmographics scores 0 on the last four rows.
    Tier: 70 points or more → high; 40-69 → mid; under 40 → low. Two overrides: intent "none"
    is low whatever the points (not a buyer), and intent "low" is at most mid (nobody gets an
    intro email for reading a blog post).
    """
    reasons: list[str] = []
    points = INTENT_POINTS[signals.intent]
    reasons.append(f"intent {signals.intent}: {points}")

    seniority = role_seniority(signals.role)
    role_points = {"decision_maker": DECISION_MAKER_POINTS, "manager": MANAGER_POINTS}.get(
        seniority, 0
    )
    points += role_points
    reasons.append(
        f"role {signals.role or '(unknown)'!r} is {seniority.replace('_', ' ')}: {role_points}"
    )

    if firmographics is None:
        reasons.append("company not in the firmographics: 0 for size, industry, revenue, country")
    else:
        points += _firmographic_points(firmographics, reasons)

    tier = tier_for(points)
    if signals.intent == "none":
        if tier != "low":
            reasons.append("intent none: not a buyer, so low whatever the points")
        tier = "low"
    elif signals.intent == "low" and tier == "high":
        reasons.append("intent low: at most mid")
        tier = "mid"
    return LeadScore(points=points, tier=tier, reasons=reasons)


def tier_for(points: int) -> Tier:
    """The tier by points alone, before `score_lead`'s intent overrides."""
    if points >= HIGH_TIER_MIN:
        return "high"
    if points >= MID_TIER_MIN:
        return "mid"
    return "low"


def _firmographic_points(f: Firmographics, reasons: list[str]) -> int:
    low, high = CORE_EMPLOYEES
    near_low, near_high = NEAR_EMPLOYEES
    if low <= f.employees <= high:
        size = CORE_EMPLOYEE_POINTS
    elif near_low <= f.employees <= near_high:
        size = NEAR_EMPLOYEE_POINTS
    else:
        size = 0
    reasons.append(f"{f.employees} employees: {size}")

    industry = f.industry.casefold()
    if industry in TARGET_INDUSTRIES:
        sector = TARGET_INDUSTRY_POINTS
    elif industry in ADJACENT_INDUSTRIES:
        sector = ADJACENT_INDUSTRY_POINTS
    else:
        sector = 0
    reasons.append(f"industry {f.industry}: {sector}")

    revenue = REVENUE_POINTS.get(f.revenue_band, 0)
    reasons.append(f"revenue {f.revenue_band}: {revenue}")

    country = SERVED_COUNTRY_POINTS if f.country.upper() in SERVED_COUNTRIES else 0
    reasons.append(f"country {f.country}: {country}")
    return size + sector + revenue + country


def archive_lead(score: LeadScore) -> str:
    """Low tier: nothing is written anywhere; the run's record is the archive."""
    return f"archived at {score.points} points (under {MID_TIER_MIN})"


# -- the tools ------------------------------------------------------------------------------


@tool(kind="read")
def look_up_firmographics(args: CompanyLookup, *, idempotency_key: str) -> Firmographics | None:
    """Look a company up by email domain or name in the demo firmographics table."""
    record = demo_crm.find_company(args.company, args.email_domain)
    return None if record is None else Firmographics(**record.__dict__)


def recall_intro_email(args: IntroEmail, result: SentEmail, *, idempotency_key: str) -> None:
    demo_crm.recall_email(result.email_id, now=current_clock().now())


INTRO_EMAIL_RULES = """Approve an intro email when it goes to the person who wrote in (the \
workflow's input), names their company as they or the firmographics give it, and offers a call \
and nothing else. Reject one that promises prices, discounts, features or dates, goes to another \
address, or reads as spam. Answer unsure when the lead looks like a job seeker, a vendor or a \
competitor."""


@tool(
    kind="send",
    rate_limit="10/hour",
    # A second model reads every intro email first; what it can't clearly approve or reject
    # (and any rejection it is not sure of) goes to a sales lead's card with its verdict.
    approval=validator(INTRO_EMAIL_RULES, min_confidence=0.8, then="human"),
    approvers=["@sales-leads"],
    expires="48h",
    reverse=recall_intro_email,
)
def send_intro_email(args: IntroEmail, *, idempotency_key: str) -> SentEmail:
    """Send an intro email to a qualified lead (demo outbox)."""
    record = demo_crm.send_email(
        to_address=args.to,
        subject=args.subject,
        body=args.body,
        idempotency_key=idempotency_key,
        now=current_clock().now(),
    )
    return SentEmail(email_id=record.id, to=record.to_address, status=record.status)


def remove_from_crm(args: CrmLeadArgs, result: CrmLead, *, idempotency_key: str) -> None:
    demo_crm.remove_lead(result.lead_id, now=current_clock().now())


@tool(
    kind="write",
    rate_limit="120/hour",
    approval="never",
    approvers=["@sales-leads"],  # who may undo it
    idempotent=True,
    reverse=remove_from_crm,
)
def add_to_crm(args: CrmLeadArgs, *, idempotency_key: str) -> CrmLead:
    """Add a lead to the CRM for a salesperson to follow up (demo CRM table)."""
    record = demo_crm.add_lead(
        email=args.email,
        company=args.company,
        role=args.role,
        score=args.score,
        note=args.note,
        idempotency_key=idempotency_key,
        now=current_clock().now(),
    )
    return CrmLead(lead_id=record.id, status=record.status)


# -- the pipeline ---------------------------------------------------------------------------

EXTRACT_SYSTEM = """You read inbound sales enquiries for Gatehouse, a Slack bot that runs \
AI workflows with human approvals. From the message, extract the sender's company, their job \
title and how strong their buying intent is. Use the sender's email domain only as a hint for \
the company; leave a field empty when the message does not say."""


def lead_prompt(lead: InboundLead) -> str:
    sender = f"{lead.name} <{lead.email}>" if lead.name else lead.email
    return f"From: {sender}\n\n{lead.message}"


def email_domain(address: str) -> str:
    return address.rpartition("@")[2].casefold()


def draft_intro_email(
    lead: InboundLead, signals: LeadSignals, firmographics: Firmographics | None
) -> IntroEmail:
    """A template, not a model: the approver sees exactly what will be sent, and the demo works
    with no model configured."""
    first_name = lead.name.split()[0] if lead.name.strip() else "there"
    company = firmographics.name if firmographics else signals.company
    body = (
        f"Hi {first_name},\n\n"
        f"Thanks for getting in touch about Gatehouse. It runs AI workflows in production with "
        f"every risky action approved in Slack and every step recorded, so a team like "
        f"{company}'s can automate without losing control.\n\n"
        "Would a 30-minute call next week work for you? Reply with a time that suits you and "
        "I will send an invite.\n\n"
        "Best,\nThe Gatehouse team"
    )
    return IntroEmail(to=lead.email, subject=f"Gatehouse for {company}", body=body)


@pipeline("lead_qualify", input=InboundLead, triggers=[webhook()])
def lead_qualify(ctx: Context, lead: InboundLead) -> LeadOutcome:
    """Qualify an inbound lead: high → intro email (approved), mid → CRM, low → archived."""
    signals = ctx.llm(
        "extract_lead",
        task="extract",
        system=EXTRACT_SYSTEM,
        prompt=lead_prompt(lead),
        output=LeadSignals,
        min_confidence=EXTRACT_MIN_CONFIDENCE,
    )
    firmographics = ctx.tool(
        look_up_firmographics,
        CompanyLookup(company=signals.company, email_domain=email_domain(lead.email)),
    )
    score = ctx.step("score_lead", score_lead, signals, firmographics)
    company = firmographics.name if firmographics else signals.company or email_domain(lead.email)
    crm_args = CrmLeadArgs(
        email=lead.email,
        company=company,
        role=signals.role,
        score=score.points,
        note="; ".join(score.reasons),
    )

    if score.tier == "high":
        try:
            sent = ctx.tool(send_intro_email, draft_intro_email(lead, signals, firmographics))
        except ActionRejected as rejected:
            # Still a good lead: a salesperson follows up by hand instead.
            note = f"intro email not sent: {rejected.reason}; {crm_args.note}"
            added = ctx.tool(add_to_crm, crm_args.model_copy(update={"note": note}))
            return LeadOutcome(
                action="added_to_crm",
                company=company,
                points=score.points,
                tier=score.tier,
                message=f"intro email not sent ({rejected.reason}); added to the CRM instead",
                crm_lead_id=added.lead_id,
            )
        return LeadOutcome(
            action="emailed",
            company=company,
            points=score.points,
            tier=score.tier,
            message=f"intro email sent to {sent.to}",
            email_id=sent.email_id,
        )
    if score.tier == "mid":
        added = ctx.tool(add_to_crm, crm_args)
        return LeadOutcome(
            action="added_to_crm",
            company=company,
            points=score.points,
            tier=score.tier,
            message=f"added to the CRM at {score.points} points",
            crm_lead_id=added.lead_id,
        )
    archived = ctx.step("archive_lead", archive_lead, score)
    return LeadOutcome(
        action="archived", company=company, points=score.points, tier=score.tier, message=archived
    )
