"""Sample inputs for the example pipelines: what the demo's history and its short schedules send.

Each sample comes with the answer a careful reader (the scripted model of the demo history, or
the person answering a human task in the sandbox) would give, so a test or the seeder knows what
the run should do. The order book here extends the demo connector's four orders.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pipelines.catalog.connectors.demo_crm import SEED_COMPANIES
from pipelines.catalog.connectors.demo_orders import SEED_ORDERS
from pipelines.fire_times import interval_trigger
from pipelines.operations.schedules import Schedule
from pipelines.triggers import every

CUSTOMERS = (
    "ada",
    "grace",
    "linus",
    "barbara",
    "edsger",
    "margaret",
    "alan",
    "katherine",
    "dennis",
    "frances",
    "radia",
    "hedy",
    "donald",
    "sophie",
    "tim",
    "joan",
)

GENERATED_ORDER_START = 2001


@dataclass(frozen=True)
class DemoOrder:
    id: str
    customer: str
    amount_cents: int
    currency: str = "EUR"


def order_book(count: int, rng: random.Random) -> list[DemoOrder]:
    """The connector's four orders, then `count` more (`ord_2001`, …) for the history to refund."""
    orders = [DemoOrder(i, c, a, cur) for i, c, a, cur in SEED_ORDERS]
    for number in range(count):
        customer = f"{rng.choice(CUSTOMERS)}@example.com"
        amount = rng.choice((1_999, 2_450, 3_900, 4_999, 7_500, 12_900, 18_000, 24_900, 39_900))
        orders.append(DemoOrder(f"ord_{GENERATED_ORDER_START + number}", customer, amount))
    return orders


# -- support tickets ------------------------------------------------------------------------

REFUND_REASONS = ("arrived scratched", "never arrived", "was the wrong size", "stopped working")
BUG_TICKETS = (
    ("Export does nothing", "Clicking Export on the orders page does nothing since yesterday."),
    ("App crashes on upload", "The app closes every time I upload a photo of the receipt."),
    ("Wrong total in basket", "My basket shows 0.00 although it has three items in it."),
    ("Login loop", "After I log in I am sent back to the login page, again and again."),
)
QUESTION_TICKETS = (
    ("Change address", "How do I change the delivery address of an order I placed today?"),
    ("Invoice", "Where can I download the invoice for my last order?"),
    ("Gift wrap", "Do you offer gift wrapping, and how much does it cost?"),
    ("Opening hours", "Is your support line open on Saturdays?"),
)
OTHER_TICKETS = (
    ("Thank you", "Just wanted to say the new packaging is lovely."),
    ("Partnership", "We run a blog about home offices and would like to feature you."),
)
UNCLEAR_TICKETS = (
    ("Not happy", "Not happy with this at all. Sort it out please."),
    ("Order", "About my order, see previous email."),
)


@dataclass(frozen=True)
class TicketSample:
    ticket: dict[str, Any]
    label: dict[str, Any]  # what a person reading it would answer (TicketLabel's fields)
    clear: bool  # False: a model would be unsure (confidence under the bar)


def refund_ticket(number: int, order: DemoOrder, amount_cents: int, reason: str) -> TicketSample:
    amount = f"{Decimal(amount_cents) / 100:.2f}"
    return TicketSample(
        ticket={
            "ticket_id": f"T-{number}",
            "customer_email": order.customer,
            "subject": f"Refund for {order.id}",
            "body": f"Hello, order {order.id} {reason}. Could I get {amount} EUR back, please?",
        },
        label={"kind": "refund", "confidence": 1, "order_id": order.id, "amount": amount},
        clear=True,
    )


def plain_ticket(number: int, kind: str, rng: random.Random) -> TicketSample:
    """A bug, a question, something else, a refund that names no order, or an unclear one."""
    customer = f"{rng.choice(CUSTOMERS)}@example.com"
    label: dict[str, Any] = {"kind": kind, "confidence": 1, "order_id": None, "amount": None}
    clear = True
    if kind == "bug":
        subject, body = rng.choice(BUG_TICKETS)
    elif kind == "question":
        subject, body = rng.choice(QUESTION_TICKETS)
    elif kind == "refund":
        subject, body = "Money back", "The blender I bought last month broke. I want a refund."
    elif kind == "unclear":
        subject, body = rng.choice(UNCLEAR_TICKETS)
        label["kind"] = rng.choice(("refund", "other"))
        clear = False
    else:
        subject, body = rng.choice(OTHER_TICKETS)
    ticket = {"ticket_id": f"T-{number}", "customer_email": customer, "subject": subject}
    return TicketSample(ticket={**ticket, "body": body}, label=label, clear=clear)


# -- inbound leads --------------------------------------------------------------------------

LEAD_NAMES = ("Priya Raman", "Tom Becker", "Aiko Tanaka", "Luis Ortega", "Nora Lind", "Sam Okafor")
LEAD_ROLES = {
    "decision_maker": ("VP Engineering", "Head of Operations", "CTO", "Director of Support"),
    "manager": ("Engineering Manager", "Support Team Lead", "Solutions Architect"),
    "other": ("Software Engineer", "Analyst", "Student"),
}
LEAD_MESSAGES = {
    "high": "We would like a demo and pricing for about 200 seats; budget is approved for Q1.",
    "medium": "We are comparing tools to put approvals around our AI workflows in Slack.",
    "low": "Read your blog post on human review, interesting. Keep me posted.",
    "none": "Are you hiring? I would love to join the team.",
}


@dataclass(frozen=True)
class LeadSample:
    lead: dict[str, Any]
    signals: dict[str, Any]  # LeadSignals' fields
    clear: bool


def lead_sample(rng: random.Random) -> LeadSample:
    domain, company, *_ = rng.choice(SEED_COMPANIES)
    intent = rng.choices(("high", "medium", "low", "none"), weights=(4, 3, 2, 1))[0]
    seniority = rng.choices(("decision_maker", "manager", "other"), weights=(4, 3, 2))[0]
    role = rng.choice(LEAD_ROLES[seniority])
    name = rng.choice(LEAD_NAMES)
    email = f"{name.split()[0].lower()}@{domain}"
    message = f"I am {role} at {company}. {LEAD_MESSAGES[intent]}"
    clear = rng.random() > 0.12  # a vague one now and then: the model is unsure
    if not clear:
        message = "Saw your launch. Could be relevant for us at some point, maybe."
    return LeadSample(
        lead={"email": email, "name": name, "message": message},
        signals={"company": company, "role": role, "intent": intent, "confidence": 1},
        clear=clear,
    )


# -- the live demo's schedules --------------------------------------------------------------

# What the demo's scripted model says about a live case: sure of the clear ones (over each
# step's bar), unsure of the vague ones on purpose (under it), so those go to a person.
SURE = 0.93
UNSURE_TICKET = 0.62  # ticket_triage's bar is 0.8
UNSURE_LEAD = 0.45  # lead_qualify's bar is 0.6


@dataclass(frozen=True)
class LiveCase:
    """One fire's input, and the answer (with its confidence) the scripted model gives."""

    input: dict[str, Any]
    answer: dict[str, Any]


def scheduled_ticket(index: int) -> LiveCase:
    """The ticket the demo's short ticket_triage schedule sends at its `index`-th fire: it
    cycles through a refund over 100.00 from the order's customer (an approval card), a small
    refund (issued at once), a bug, a question, and a vague one the model is unsure of (a human
    task), all from the connector's own orders and customers."""
    number = 9000 + index % 1000
    large = DemoOrder("ord_1004", "barbara@example.com", 89_900)
    small = DemoOrder("ord_1001", "ada@example.com", 4_999)
    cycle: list[Callable[[], tuple[TicketSample, float]]] = [
        lambda: (refund_ticket(number, large, 120_00, "stopped working"), SURE),
        lambda: (refund_ticket(number, small, 5_00, "arrived scratched"), SURE),
        lambda: (plain_ticket(number, "bug", random.Random(index)), SURE),
        lambda: (plain_ticket(number, "question", random.Random(index)), SURE),
        lambda: (plain_ticket(number, "unclear", random.Random(index)), UNSURE_TICKET),
    ]
    sample, confidence = cycle[index % len(cycle)]()
    return LiveCase(sample.ticket, {**sample.label, "confidence": confidence})


def scheduled_lead(index: int) -> LiveCase:
    """The lead the demo's short lead_qualify schedule sends at its `index`-th fire (a vague
    one now and then: the model is unsure, a person reads it)."""
    sample = lead_sample(random.Random(index))
    confidence = SURE if sample.clear else UNSURE_LEAD
    return LiveCase(sample.lead, {**sample.signals, "confidence": confidence})


TICKETS_PER_APPROVAL = 5  # one ticket in each cycle of `scheduled_ticket` asks for approval

DEMO_SCHEDULES: dict[str, tuple[timedelta, Callable[[int], LiveCase]]] = {
    "ticket_triage": (timedelta(minutes=2), scheduled_ticket),
    "lead_qualify": (timedelta(minutes=5), scheduled_lead),
}


def demo_case(pipeline: str, fire_time: datetime) -> LiveCase:
    """The case the demo's short schedule of `pipeline` sends at this fire."""
    interval, sample = DEMO_SCHEDULES[pipeline]
    return sample(int(fire_time.timestamp() // interval.total_seconds()))


def demo_schedule(pipeline: str, fire_time: datetime) -> Schedule:
    """The demo's short schedule of `pipeline` at one fire: `every(...)` with this fire's sample
    as its input (a schedule's input is fixed; the demo's changes from fire to fire). Named
    `PIPELINE#demo`; claimed and queued by `pipelines.operations.schedules.fire` like any schedule."""
    interval, _sample = DEMO_SCHEDULES[pipeline]
    trigger = every(interval, input=demo_case(pipeline, fire_time).input)
    return Schedule(f"{pipeline}#demo", pipeline, trigger, "UTC", interval_trigger(interval, "UTC"))
