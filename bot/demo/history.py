"""Demo history: a few days of the example pipelines' runs, made by the real engine.

`seed_history` replays a made-up week on a clock it moves: tickets, leads and refund requests
arrive in business hours, the scripted model (`bot.demo.model`) classifies them (unsure
now and then: a person answers; down now and then; misconfigured for a few minutes one
afternoon: an error spike), approvers decide (or let requests expire), and now and then a
process dies in the middle of a refund or an email. Every record is written by the engine
itself, so `gatehouse stats`, the chart, App Home, alerts and the weekly review see exactly what
production would have written. Counts are the same for the same seed; ids are random.

It refuses a database that already has runs: history is only ever added to a fresh one.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, insert, select

from bot.demo.model import DemoClock, Faults, Reply, ScriptedModel, SimulatedCrash
from bot.demo.samples import (
    REFUND_REASONS,
    DemoOrder,
    lead_sample,
    order_book,
    plain_ticket,
    refund_ticket,
)
from pipelines import runner
from pipelines.approvals import decide
from pipelines.catalog.connectors.tables import create_tables
from pipelines.catalog.connectors.tables import orders as orders_table
from pipelines.errors import GatehouseError
from pipelines.four_eyes import excluded_deciders
from pipelines.inspect import pending
from pipelines.operations.alerting import AlertPolicy
from pipelines.operations.alerts import evaluate
from pipelines.pipeline import CATALOG, discover
from pipelines.ports import StaticDirectory
from pipelines.runtime import Runtime
from pipelines.tasks import answer
from pipelines.views import ApprovalView, TaskView
from pipelines.worker import Worker
from storage import outbox as outbox_rows
from storage.approvals import approvals_table, tasks_table
from storage.calls import calls_table
from storage.db import Database
from storage.runs import runs_table

LEASE = timedelta(minutes=5)
SHARE = {"ticket_triage": 0.45, "lead_qualify": 0.30, "refund_request": 0.25}
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 4, 8, 10, 10, 9, 7, 9, 10, 10, 9, 7, 5, 3, 2, 2, 1, 1]
REJECT_REASONS = (
    "the order was delivered; the photo shows no damage",
    "the customer was refunded last week already",
    "not our ideal customer; a salesperson will reply by hand",
    "duplicate of an earlier request",
)
Fate = Literal["approve", "reject", "expire"]


class NotAFreshDatabase(GatehouseError):
    pass


@dataclass(frozen=True)
class DemoPeople:
    """Who acts in the history: the ids the sandbox workspace uses by default."""

    approvers: tuple[str, ...] = ("U_ALICE", "U_BOB")  # in @finance-leads and @sales-leads
    requester: str = "U_CAROL"  # asks for refunds with /gatehouse trigger; approves nothing
    answerers: tuple[str, ...] = ("U_OLGA", "U_ALICE", "U_CAROL")  # answer human tasks

    @property
    def groups(self) -> dict[str, list[str]]:
        return {"finance-leads": list(self.approvers), "sales-leads": list(self.approvers)}


@dataclass
class Plan:
    """One run to make: its input, what the model says, and how people treat it."""

    pipeline: str
    input: dict[str, Any]
    user: str | None = None
    source: str = "webhook"
    replies: list[Reply] = field(default_factory=list)
    human_answer: dict[str, Any] | None = None
    fate: Fate = "approve"
    crash: str | None = None  # a demo table whose write "kills the process"
    failing_read: str | None = None  # a demo table whose service errs when read
    marker: str | None = None  # a value in the crashing write (the order id, the run id)
    leave_waiting: bool = False  # nobody acts before the demo starts: a live card
    show_card: bool = False  # settled before the demo starts, and its card shown all the same


@dataclass
class HistoryReport:
    days: int
    seed: int
    start: datetime
    end: datetime
    runs: Counter[str]
    approvals: Counter[str]
    tasks: Counter[str]
    llm_calls: int
    llm_cost_usd: float
    alerts_opened: int
    seconds: float

    def summary(self) -> str:
        statuses = ", ".join(f"{count} {status}" for status, count in self.runs.most_common())
        return (
            f"{sum(self.runs.values())} runs over {self.days} days ({statuses}); "
            f"{sum(self.approvals.values())} approvals, {sum(self.tasks.values())} human tasks, "
            f"{self.llm_calls} model calls (${self.llm_cost_usd:.4f}) in {self.seconds:.1f} s"
        )


def _ensure_fresh(db: Database) -> None:
    with db.transaction() as conn:
        count = conn.execute(select(func.count()).select_from(runs_table)).scalar_one()
    if count:
        raise NotAFreshDatabase(
            f"the database already has {count} runs; demo history is only seeded into a fresh "
            "database (start the demo without --reuse, or point it at a new file)"
        )


class _History:
    def __init__(self, db: Database, *, rng: random.Random, people: DemoPeople, start: datetime):
        self.rng = rng
        self.people = people
        self.clock = DemoClock(start)
        self.model = ScriptedModel(self.clock)
        self.faults = Faults(db)
        self.rt = Runtime(
            db=db,
            clock=self.clock,
            directory=StaticDirectory(people.groups),
            worker_id="demo-history:worker-1",
            lease=LEASE,
            outbox=False,  # no card is owed for the past; `owe_cards` adds the waiting ones
            _llm_caller=self.model.caller(),
        )
        # The process that takes over runs whose worker "died" (after their lease runs out).
        self.successor = Runtime(
            db=db,
            clock=self.clock,
            directory=self.rt.directory,
            worker_id="demo-history:worker-2",
            lease=LEASE,
            outbox=False,
        )
        self.worker = Worker(self.rt)
        self.events: list[tuple[datetime, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.plans: dict[str, Plan] = {}
        self.seen: set[str] = set()
        self.alerts_opened = 0

    def at(self, moment: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (moment, next(self.order), action))

    def play(self, end: datetime) -> None:
        while self.events and self.events[0][0] <= end:
            moment, _, action = heapq.heappop(self.events)
            self.clock.set(moment)
            action()
            self._work()
            self._plan_people(end)

    def _work(self) -> None:
        try:
            self.worker.run_until_idle()
        except SimulatedCrash:
            self._after_crash()
        finally:
            self.faults.disarm()

    def _after_crash(self) -> None:
        def take_over() -> None:
            Worker(self.successor).run_one()

        self.at(self.clock.now() + LEASE + timedelta(seconds=self.rng.uniform(20, 90)), take_over)

    def trigger(self, plan: Plan) -> None:
        self.model.script(plan.replies)
        if plan.crash and plan.marker:  # a crash during the run's first execution
            self.faults.crash_on_insert(plan.crash, plan.marker)
        if plan.failing_read:
            self.faults.fail_on_read(plan.failing_read, _service_error(plan.failing_read))
        try:
            run = runner.trigger(
                self.rt, plan.pipeline, plan.input, user=plan.user, source=plan.source
            )
        except SimulatedCrash:
            self._after_crash()
            return
        finally:
            self.faults.disarm()
        self.plans[run.id] = plan

    # -- people: decisions and answers, some time after the card appeared ----------------------

    def _plan_people(self, end: datetime) -> None:
        for item in pending(self.rt):
            if item.id in self.seen:
                continue
            self.seen.add(item.id)
            plan = self.plans.get(item.run_id)
            if plan is None or plan.leave_waiting:
                continue
            if isinstance(item, ApprovalView):
                self._plan_decision(item, plan, end)
            else:
                self._plan_answer(item, plan, end)

    def _plan_decision(self, approval: ApprovalView, plan: Plan, end: datetime) -> None:
        if plan.fate == "expire":
            if approval.expires_at is not None:
                self.at(approval.expires_at + timedelta(seconds=30), lambda: None)
            return
        minutes = min(self.rng.lognormvariate(math.log(25), 0.9), 20 * 60)
        when = approval.requested_at + timedelta(minutes=minutes)
        if when > end:
            return  # still waiting when the demo starts: a card to decide live
        # As four-eyes has it: not whoever triggered the run or answered a person's step of it.
        kept_out = {e.user for e in excluded_deciders(self.rt, approval)} | {approval.trigger_user}
        allowed = [p for p in self.people.approvers if p not in kept_out]
        user = self.rng.choice(allowed)
        reason = self.rng.choice(REJECT_REASONS) if plan.fate == "reject" else None

        def decided() -> None:
            if plan.crash and plan.marker is None:  # a crash once the approval resumes it
                self.faults.crash_on_insert(plan.crash, approval.run_id)
            decide(self.rt, approval.id, user=user, approve=reason is None, reason=reason)

        self.at(when, decided)

    def _plan_answer(self, task: TaskView, plan: Plan, end: datetime) -> None:
        minutes = self.rng.lognormvariate(math.log(12), 0.8)
        when = task.opened_at + timedelta(minutes=minutes)
        if when > end or plan.human_answer is None:
            return
        user = self.rng.choice(self.people.answerers)
        given = plan.human_answer

        def answered() -> None:
            answer(self.rt, task.id, user=user, answer=given)

        self.at(when, answered)

    # -- alerts: evaluated every minute around the spike, as the bot's job does ---------------

    def owe_cards(self) -> int:
        """The outbox rows the engine writes for what still waits, so that the demo's bot posts
        those cards when it starts (and only those: the past needs no card)."""
        waiting = pending(self.rt)
        shown = [run_id for run_id, plan in self.plans.items() if plan.show_card]
        now = self.clock.now()  # owed as of now: older rows would be skipped as stale
        with self.rt.db.transaction() as conn:
            settled = [
                str(row.id)
                for row in conn.execute(
                    select(approvals_table.c.id)
                    .where(approvals_table.c.run_id.in_(shown))
                    .order_by(approvals_table.c.requested_at)
                )
            ]
            for approval_id in settled:  # first, so the live cards are below them
                outbox_rows.enqueue(conn, event="approval_decided", subject_id=approval_id, now=now)
            for item in waiting:
                event = "approval_requested" if isinstance(item, ApprovalView) else "task_opened"
                outbox_rows.enqueue(conn, event=event, subject_id=item.id, now=now)
        return len(waiting) + len(settled)

    def evaluate_alerts(self) -> None:
        self.alerts_opened += sum(
            1 for change in evaluate(self.rt, AlertPolicy()) if change.kind == "opened"
        )


def _service_error(table: str) -> Callable[[], Exception]:
    service = {"demo_orders": "order service", "demo_companies": "enrichment service"}
    name = service.get(table, "service")
    return lambda: TimeoutError(f"the {name} did not answer within 10 s")


def _model_reply(answer: dict[str, Any], *, confidence: float, rng: random.Random) -> Reply:
    return Reply({**answer, "confidence": round(confidence, 2)}, latency_seconds=_latency(rng))


def _latency(rng: random.Random) -> float:
    return round(rng.lognormvariate(math.log(1.1), 0.45), 3)


def _llm_replies(answer: dict[str, Any], clear: bool, rng: random.Random) -> list[Reply]:
    """What the model does with one case: mostly a confident answer; sometimes an answer that
    misses the schema first, an unsure one (a person answers), or a server error (a person)."""
    roll = rng.random()
    if roll < 0.04:
        return [Reply(status=503, latency_seconds=_latency(rng))]
    if not clear:
        return [_model_reply(answer, confidence=rng.uniform(0.35, 0.7), rng=rng)]
    if roll < 0.10:
        missing = {k: v for k, v in answer.items() if k != "kind" and k != "intent"}
        return [
            Reply(missing, latency_seconds=_latency(rng)),
            _model_reply(answer, confidence=0.9, rng=rng),
        ]
    return [_model_reply(answer, confidence=rng.uniform(0.82, 0.99), rng=rng)]


class _Planner:
    """Makes up the cases: realistic inputs, and what happens to each."""

    def __init__(self, rng: random.Random, people: DemoPeople, orders: list[DemoOrder]) -> None:
        self.rng = rng
        self.people = people
        self.orders = iter(orders[4:])  # the connector's own four are left for the live demo
        self.tickets = itertools.count(1001)

    def fate(self, reject: int = 15) -> Fate:
        return self.rng.choices(("approve", "reject", "expire"), weights=(85 - reject, reject, 8))[
            0
        ]

    def ticket(self) -> Plan:
        rng = self.rng
        kind = rng.choices(
            ("refund_order", "refund", "bug", "question", "other", "unclear"),
            weights=(30, 6, 22, 24, 6, 12),
        )[0]
        number = next(self.tickets)
        if kind == "refund_order":
            order = next(self.orders)
            amount = rng.choice((order.amount_cents, order.amount_cents // 2, 1_500))
            sample = refund_ticket(
                number, order, min(amount, order.amount_cents), rng.choice(REFUND_REASONS)
            )
        else:
            order = None
            sample = plain_ticket(number, kind, rng)
        plan = Plan(
            "ticket_triage",
            sample.ticket,
            replies=_llm_replies(sample.label, sample.clear, rng),
            human_answer=sample.label,
            fate=self.fate(),
        )
        if order is not None and rng.random() < 0.04:
            plan.failing_read = "demo_orders"
        return plan

    def lead(self) -> Plan:
        sample = lead_sample(self.rng)
        plan = Plan(
            "lead_qualify",
            sample.lead,
            replies=_llm_replies(sample.signals, sample.clear, self.rng),
            human_answer=sample.signals,
            fate=self.fate(),
        )
        roll = self.rng.random()
        if roll < 0.03:
            plan.failing_read = "demo_companies"
        elif roll < 0.10:
            plan.crash = "demo_outbox"  # after the approval, as the email goes out
        return plan

    def refund(self) -> Plan:
        rng = self.rng
        order = next(self.orders)
        roll = rng.random()
        if roll < 0.05:
            bad = {"order_id": order.id, "amount": "-5", "reason": "?"}
            return Plan("refund_request", bad, source="webhook")
        amount = rng.choice(
            (order.amount_cents, order.amount_cents, order.amount_cents // 3, 2_000)
        )
        order_id = order.id if roll > 0.09 else f"ord_{rng.randint(7000, 7999)}"  # not found
        request = {
            "order_id": order_id,
            "amount": f"{Decimal(amount) / 100:.2f}",
            "reason": rng.choice(REFUND_REASONS),
        }
        by_slack = rng.random() < 0.6
        user = (
            (self.people.requester if rng.random() < 0.8 else self.people.approvers[0])
            if by_slack
            else None
        )
        plan = Plan(
            "refund_request",
            request,
            user=user,
            source="slack" if by_slack else "webhook",
            fate=self.fate(),
        )
        if amount <= 100_00 and rng.random() < 0.12:
            plan.crash, plan.marker = "demo_refunds", order.id
        return plan


def _arrival_times(
    rng: random.Random, start: datetime, end: datetime, per_day: float
) -> list[datetime]:
    """Arrivals in business-hours-heavy days: `per_day` on average, between start and end."""
    times = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    total_weight = sum(HOUR_WEIGHTS)
    while day < end:
        weekend = day.weekday() >= 5
        for hour, weight in enumerate(HOUR_WEIGHTS):
            expected = per_day * weight / total_weight * (0.35 if weekend else 1.0)
            count = _poisson(rng, expected)
            for _ in range(count):
                moment = day + timedelta(hours=hour, seconds=rng.uniform(0, 3600))
                if start <= moment < end:
                    times.append(moment)
        day += timedelta(days=1)
    return sorted(times)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def seed_history(
    db: Database,
    *,
    days: int = 5,
    runs_per_day: int = 40,
    seed: int = 7,
    end: datetime | None = None,
    people: DemoPeople | None = None,
) -> HistoryReport:
    """Make `days` days of history ending at `end` (default now) in a fresh, migrated database."""
    if days < 1:
        raise ValueError(f"seed_history needs at least one day, got days={days}")
    began = time.perf_counter()
    discover([CATALOG])
    _ensure_fresh(db)
    people = people or DemoPeople()
    rng = random.Random(seed)
    end = (end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    orders = order_book(int(days * runs_per_day) + 50, rng)
    create_tables(db)
    with db.transaction() as conn:
        conn.execute(
            insert(orders_table),
            [
                {
                    "id": o.id,
                    "customer": o.customer,
                    "amount_cents": o.amount_cents,
                    "currency": o.currency,
                    "refunded_cents": 0,
                }
                for o in orders
            ],
        )
    history = _History(db, rng=rng, people=people, start=start)
    planner = _Planner(rng, people, orders)
    makers = {
        "ticket_triage": planner.ticket,
        "lead_qualify": planner.lead,
        "refund_request": planner.refund,
    }
    for name, share in SHARE.items():
        for moment in _arrival_times(rng, start, end, runs_per_day * share):
            plan = makers[name]()
            history.at(moment, functools.partial(history.trigger, plan))
    _plan_spike(history, rng, spike_time(start, end))
    if end - timedelta(hours=26) >= start:  # its 24 h run out before the demo starts
        _plan_expired(history, planner, end - timedelta(hours=26))
    _plan_waiting(history, planner, end - timedelta(minutes=20))
    try:
        history.play(end)
        history.owe_cards()
    finally:
        history.rt.leases.stop()
        history.successor.leases.stop()
    report = _report(db, days=days, seed=seed, start=start, end=end)
    report.alerts_opened = history.alerts_opened
    report.seconds = round(time.perf_counter() - began, 3)
    return report


def _plan_spike(history: _History, rng: random.Random, at: datetime) -> None:
    """A model name typo rolled out for a quarter of an hour: a burst of tickets fails with
    HTTP 400 (the engine fails the run rather than asking a person to fix a configuration)."""
    begin = at.replace(minute=0, second=0)
    for number in range(14):
        sample = plain_ticket(5000 + number, rng.choice(("bug", "question")), rng)
        broken = number % 5 != 4
        replies = [Reply(status=400)] if broken else _llm_replies(sample.label, True, rng)
        plan = Plan("ticket_triage", sample.ticket, replies=replies, human_answer=sample.label)
        history.at(
            begin + timedelta(minutes=number * 0.9), functools.partial(history.trigger, plan)
        )
    for minute in range(-2, 50):
        history.at(begin + timedelta(minutes=minute, seconds=59), history.evaluate_alerts)


SPIKE_HOUR = 15  # UTC: the afternoon the README and the alert speak of


def spike_time(start: datetime, end: datetime) -> datetime:
    """Yesterday afternoon (15:00 UTC), or this afternoon once the demo starts after 18:00;
    never before the history starts (a one-day history that starts after 15:00 has it then)."""
    today = end.replace(hour=SPIKE_HOUR, minute=0, second=0, microsecond=0)
    at = today if end - today >= timedelta(hours=3) else today - timedelta(days=1)
    return max(at, start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))


def _plan_expired(history: _History, planner: _Planner, at: datetime) -> None:
    """A refund over 100.00 carol asked for that nobody decided within its 24 h: expired before
    the demo starts, its card shown in #approvals all the same ("Expired")."""
    order = next(o for o in planner.orders if o.amount_cents > 100_00)
    refund = Plan(
        "refund_request",
        {
            "order_id": order.id,
            "amount": f"{order.amount_cents / 100:.2f}",
            "reason": "was the wrong size",
        },
        user=history.people.requester,
        source="slack",
        fate="expire",
        show_card=True,
    )
    history.at(at, functools.partial(history.trigger, refund))


def _plan_waiting(history: _History, planner: _Planner, at: datetime) -> None:
    """The last few cases arrive just before the demo starts and wait for it: a refund over
    100.00 carol asked for (alice or bob approves it), one alice asked for herself (four-eyes:
    bob approves it), a hot lead's intro email, and a ticket the model could not classify (the
    model server was down)."""
    rng = planner.rng
    order = next(o for o in planner.orders if o.amount_cents > 100_00)
    refund = Plan(
        "refund_request",
        {
            "order_id": order.id,
            "amount": f"{order.amount_cents / 100:.2f}",
            "reason": "never arrived",
        },
        user=history.people.requester,
        source="slack",
        leave_waiting=True,
    )
    signals = {"company": "Brightwave Software", "role": "VP Engineering", "intent": "high"}
    lead = Plan(
        "lead_qualify",
        {
            "email": "priya@brightwave.example",
            "name": "Priya Raman",
            "message": "I am VP Engineering at Brightwave Software. We would like a demo and "
            "pricing for about 200 seats; budget is approved for Q1.",
        },
        replies=[
            _model_reply(signals, confidence=0.94, rng=rng),
            # The validation model reading the intro email: a person decides (the card says why).
            Reply(
                {
                    "verdict": "unsure",
                    "reason": "A 200-seat deal with budget approved: worth a salesperson's own "
                    "eyes before the first email goes out.",
                    "confidence": 0.86,
                },
                latency_seconds=_latency(rng),
            ),
        ],
        leave_waiting=True,
    )
    ticket = Plan(
        "ticket_triage",
        plain_ticket(next(planner.tickets), "unclear", rng).ticket,
        replies=[Reply(status=503)],
        leave_waiting=True,
    )
    # alice's own refund: four-eyes keeps her from approving it (bob may).
    own_order = next(o for o in planner.orders if o.amount_cents > 100_00)
    own = Plan(
        "refund_request",
        {
            "order_id": own_order.id,
            "amount": f"{own_order.amount_cents / 100:.2f}",
            "reason": "stopped working",
        },
        user=history.people.approvers[0],
        source="slack",
        leave_waiting=True,
    )
    for minutes, plan in enumerate((refund, own, lead, ticket)):
        history.at(at + timedelta(minutes=4 * minutes), functools.partial(history.trigger, plan))


def _report(db: Database, **what: Any) -> HistoryReport:
    with db.transaction() as conn:
        runs = Counter(
            {
                str(s): n
                for s, n in conn.execute(
                    select(runs_table.c.status, func.count()).group_by(runs_table.c.status)
                )
            }
        )
        approvals = Counter(
            {
                str(s): n
                for s, n in conn.execute(
                    select(approvals_table.c.status, func.count()).group_by(
                        approvals_table.c.status
                    )
                )
            }
        )
        tasks = Counter(
            {
                str(s): n
                for s, n in conn.execute(
                    select(tasks_table.c.status, func.count()).group_by(tasks_table.c.status)
                )
            }
        )
        llm_rows = conn.execute(select(calls_table.c.meta).where(calls_table.c.kind == "llm")).all()
    cost = sum(float((row.meta or {}).get("cost_usd") or 0) for row in llm_rows)
    return HistoryReport(
        runs=runs,
        approvals=approvals,
        tasks=tasks,
        llm_calls=len(llm_rows),
        llm_cost_usd=round(cost, 6),
        alerts_opened=0,
        seconds=0.0,
        **what,
    )
