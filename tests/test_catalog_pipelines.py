"""The shipped LLM pipelines end to end through `Gatehouse`: lead_qualify routes a lead to an
approved intro email, the CRM or the archive; ticket_triage sends refunds through the gated
refund tool and everything else to a queue. With no model configured the model's step is a
human task; with the fake OpenAI server the model answers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from pipelines import Gatehouse, LLMConfig, StaticDirectory
from pipelines.catalog.connectors import demo_crm
from pipelines.catalog.connectors import tables as demo_tables
from pipelines.catalog.lead_qualify import add_to_crm, send_intro_email
from pipelines.errors import NotAnApprover
from pipelines.runtime import running_in
from pipelines.validator import Validator
from pipelines.views import Run, TaskView
from storage.db import Database
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import FakeOpenAI, reply_json

DIRECTORY = {**GROUPS, "sales-leads": ["sam", "sue"]}

BRIGHTWAVE_LEAD = {
    "email": "dana@brightwave.example",
    "name": "Dana Reyes",
    "message": "I run platform engineering at Brightwave. Could we get a demo and pricing?",
}
BRIGHTWAVE_SIGNALS = {
    "company": "Brightwave Software",
    "role": "VP Platform Engineering",
    "intent": "high",
    "confidence": 0.92,
}
# Helios: 4,200 people 10, healthcare 5, 250M-1B 5, US 5; manager 10; high intent 30 → 65.
HELIOS_LEAD = {
    "email": "max@helios.example",
    "name": "Max Okafor",
    "message": "We are looking at tools to put approvals around our AI workflows. Demo?",
}
HELIOS_SIGNALS = {
    "company": "Helios Health",
    "role": "IT Manager",
    "intent": "high",
    "confidence": 0.88,
}
# Tinybox: 12 people 0, design 0, <1M 0, DE 5; founder 20; low intent 5 → 30.
TINYBOX_LEAD = {
    "email": "kai@tinybox.example",
    "name": "Kai",
    "message": "Saw your blog post, interesting stuff. Keep it up!",
}
TINYBOX_SIGNALS = {
    "company": "Tinybox Studio",
    "role": "Founder",
    "intent": "low",
    "confidence": 0.9,
}

# ord_1002: 250.00 EUR, grace@example.com. ord_1003: 12.50 EUR, linus@example.com.
BIG_REFUND_TICKET = {
    "ticket_id": "T-100",
    "customer_email": "grace@example.com",
    "subject": "Broken on arrival",
    "body": "Order ord_1002 arrived broken. Please refund 150.00 EUR.",
}
BIG_REFUND_LABEL = {
    "kind": "refund",
    "confidence": 0.95,
    "order_id": "ord_1002",
    "amount": "150.00",
}
SMALL_REFUND_TICKET = {
    "ticket_id": "T-101",
    "customer_email": "linus@example.com",
    "subject": "Wrong size",
    "body": "Please refund order ord_1003 in full, 12.50.",
}
SMALL_REFUND_LABEL = {
    "kind": "refund",
    "confidence": 1.0,
    "order_id": "ord_1003",
    "amount": "12.50",
}
BUG_TICKET = {
    "ticket_id": "T-102",
    "customer_email": "ada@example.com",
    "subject": "Checkout button",
    "body": "The checkout button does nothing on Firefox.",
}


@pytest.fixture
def gatehouse(db: Database, clock: FakeClock, notifier: RecordingNotifier) -> Gatehouse:
    """No model configured: every ctx.llm call goes to a person."""
    return Gatehouse(db, clock=clock, notifier=notifier, directory=StaticDirectory(DIRECTORY))


@pytest.fixture
def gatehouse_llm(
    db: Database, clock: FakeClock, notifier: RecordingNotifier, fake_openai: FakeOpenAI
) -> Gatehouse:
    """The model is the fake OpenAI server."""
    return Gatehouse(
        db,
        clock=clock,
        notifier=notifier,
        directory=StaticDirectory(DIRECTORY),
        llm=LLMConfig(
            model="gpt-4o-mini",
            base_url=fake_openai.base_url,
            api_key="sk-test",
            timeout_seconds=5.0,
            max_retries=0,
        ),
    )


def open_task(gatehouse: Gatehouse, run: Run, name: str) -> TaskView:
    """The run waits on exactly one open human task, for the model call `name`."""
    assert run.status == "waiting", run.error
    [task] = gatehouse.run(run.id).tasks
    assert (task.name, task.status) == (name, "open")
    [call] = [c for c in gatehouse.run(run.id).calls if c.kind == "llm"]
    assert (call.name, call.status) == (name, "awaiting_human")
    return task


def answer_and_resume(gatehouse: Gatehouse, task: TaskView, answer: dict[str, Any]) -> Run:
    gatehouse.answer(task.id, user="olga", answer=answer)
    resumed = gatehouse.resume(task.run_id)
    assert resumed is not None
    return resumed


def kinds_and_names(gatehouse: Gatehouse, run_id: str) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.status) for c in gatehouse.run(run_id).calls]


def outbox(gatehouse: Gatehouse) -> list[tuple[Any, ...]]:
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(
            select(
                demo_tables.outbox.c.to_address,
                demo_tables.outbox.c.subject,
                demo_tables.outbox.c.status,
            )
        ).all()
    return [tuple(r) for r in rows]


def crm(gatehouse: Gatehouse) -> list[tuple[Any, ...]]:
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(
            select(
                demo_tables.crm_leads.c.email,
                demo_tables.crm_leads.c.company,
                demo_tables.crm_leads.c.score,
                demo_tables.crm_leads.c.status,
            )
        ).all()
    return [tuple(r) for r in rows]


def crm_notes(gatehouse: Gatehouse) -> list[str]:
    with gatehouse.db.transaction() as conn:
        return list(conn.execute(select(demo_tables.crm_leads.c.note)).scalars())


def refunds(gatehouse: Gatehouse) -> list[tuple[Any, ...]]:
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(
            select(
                demo_tables.refunds.c.order_id,
                demo_tables.refunds.c.amount_cents,
                demo_tables.refunds.c.status,
            )
        ).all()
    return [tuple(r) for r in rows]


# -- lead_qualify with no model: a person reads the lead ---------------------------------


def test_high_lead_read_by_a_person_waits_for_a_sales_lead_then_sends_the_intro_email(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
    task = open_task(gatehouse, run, "extract_lead")
    assert task.context["reason"].startswith("no model is configured")
    assert "Brightwave" in task.context["input"]
    assert set(task.output_schema["properties"]) == {"company", "role", "intent", "confidence"}

    waiting = answer_and_resume(gatehouse, task, {**BRIGHTWAVE_SIGNALS, "confidence": 1.0})

    assert waiting.status == "waiting"
    [approval] = gatehouse.run(run.id).approvals
    assert (approval.tool, approval.tool_kind, approval.approvers) == (
        "send_intro_email",
        "send",
        ["@sales-leads"],
    )
    assert approval.args["to"] == "dana@brightwave.example"
    assert approval.args["subject"] == "Gatehouse for Brightwave Software"
    assert approval.args["body"].startswith("Hi Dana,")
    assert outbox(gatehouse) == [], "nothing is sent before the approval"

    gatehouse.approve(approval.id, user="sue")
    done = gatehouse.resume(run.id)

    assert done is not None and done.status == "succeeded", done
    assert done.output["action"] == "emailed"
    assert (done.output["company"], done.output["points"], done.output["tier"]) == (
        "Brightwave Software",
        100,
        "high",
    )
    assert done.output["email_id"] is not None
    assert outbox(gatehouse) == [
        ("dana@brightwave.example", "Gatehouse for Brightwave Software", "sent")
    ]
    assert kinds_and_names(gatehouse, run.id) == [
        ("llm", "extract_lead", "succeeded"),
        ("tool", "look_up_firmographics", "succeeded"),
        ("step", "score_lead", "succeeded"),
        # No model for the validator either: it gave no verdict, so a sales lead decided.
        ("llm", "validator:send_intro_email", "failed"),
        ("tool", "send_intro_email", "succeeded"),
    ]
    [llm_call] = [c for c in gatehouse.run(run.id).calls if c.name == "extract_lead"]
    assert llm_call.meta["answered_by"] == "human"


def test_only_a_sales_lead_may_approve_the_intro_email(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
    answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), BRIGHTWAVE_SIGNALS)
    [approval] = gatehouse.run(run.id).approvals

    with pytest.raises(NotAnApprover, match="@sales-leads"):
        gatehouse.approve(approval.id, user="alice")

    assert gatehouse.run(run.id).approvals[0].status == "pending"


def test_undo_of_an_intro_email_marks_it_recalled(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
    answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), BRIGHTWAVE_SIGNALS)
    gatehouse.approve(gatehouse.run(run.id).approvals[0].id, user="sam")
    gatehouse.resume(run.id)
    [send] = [c for c in gatehouse.run(run.id).calls if c.name == "send_intro_email"]

    gatehouse.undo(send.id, user="sue")

    assert outbox(gatehouse) == [
        ("dana@brightwave.example", "Gatehouse for Brightwave Software", "recalled")
    ]


def test_rejected_intro_email_puts_the_lead_in_the_crm_instead(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
    answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), BRIGHTWAVE_SIGNALS)

    gatehouse.reject(gatehouse.run(run.id).approvals[0].id, user="sam", reason="already talking")
    done = gatehouse.resume(run.id)

    assert done is not None and done.status == "succeeded", done
    assert done.output["action"] == "added_to_crm"
    assert "already talking" in done.output["message"]
    assert outbox(gatehouse) == []
    assert crm(gatehouse) == [("dana@brightwave.example", "Brightwave Software", 100, "open")]
    assert crm_notes(gatehouse)[0].startswith("intro email not sent: rejected by sam")


def test_mid_lead_goes_to_the_crm_without_an_approval(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("lead_qualify", HELIOS_LEAD)

    done = answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), HELIOS_SIGNALS)

    assert done.status == "succeeded", done.error
    assert (done.output["action"], done.output["points"], done.output["tier"]) == (
        "added_to_crm",
        65,
        "mid",
    )
    assert done.output["crm_lead_id"] is not None
    assert gatehouse.run(run.id).approvals == []
    assert crm(gatehouse) == [("max@helios.example", "Helios Health", 65, "open")]
    assert "role 'IT Manager' is manager: 10" in crm_notes(gatehouse)[0]
    assert outbox(gatehouse) == []


def test_undo_of_a_crm_lead_marks_it_removed_and_only_sales_leads_may(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("lead_qualify", HELIOS_LEAD)
    answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), HELIOS_SIGNALS)
    [add] = [c for c in gatehouse.run(run.id).calls if c.name == "add_to_crm"]

    with pytest.raises(NotAnApprover, match="@sales-leads"):
        gatehouse.undo(add.id, user="olga")
    gatehouse.undo(add.id, user="sam")

    assert crm(gatehouse) == [("max@helios.example", "Helios Health", 65, "removed")]


def test_low_lead_is_archived_with_no_side_effect(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("lead_qualify", TINYBOX_LEAD)

    done = answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), TINYBOX_SIGNALS)

    assert done.status == "succeeded", done.error
    assert (done.output["action"], done.output["points"], done.output["tier"]) == (
        "archived",
        30,
        "low",
    )
    assert kinds_and_names(gatehouse, run.id)[-1] == ("step", "archive_lead", "succeeded")
    assert crm(gatehouse) == [] and outbox(gatehouse) == []


def test_a_company_found_by_neither_domain_nor_name_scores_without_firmographics(
    gatehouse: Gatehouse,
) -> None:
    lead = {"email": "jo@gmail.com", "message": "Pricing for 50 seats? We need it this quarter."}
    run = gatehouse.trigger("lead_qualify", lead)
    signals = {"company": "Unknown Widgets", "role": "CTO", "intent": "high", "confidence": 1.0}

    done = answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), signals)

    assert done.status == "succeeded", done.error
    assert (done.output["company"], done.output["points"], done.output["tier"]) == (
        "Unknown Widgets",
        50,
        "mid",
    )
    [lookup] = [c for c in gatehouse.run(run.id).calls if c.name == "look_up_firmographics"]
    assert lookup.input == {"company": "Unknown Widgets", "email_domain": "gmail.com"}
    assert lookup.output is None


def test_firmographics_match_the_email_domain_when_the_name_differs(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
    signals = {**BRIGHTWAVE_SIGNALS, "company": "BW"}

    answer_and_resume(gatehouse, open_task(gatehouse, run, "extract_lead"), signals)

    [lookup] = [c for c in gatehouse.run(run.id).calls if c.name == "look_up_firmographics"]
    assert lookup.output["name"] == "Brightwave Software"


def test_the_lead_tools_declare_their_gates() -> None:
    assert send_intro_email.kind == "send"
    assert isinstance(send_intro_email.approval, Validator)
    assert send_intro_email.approval.then == "human"
    assert send_intro_email.rate_limit_text == "10/hour"
    assert send_intro_email.approvers == ("@sales-leads",)
    assert send_intro_email.reverse is not None
    assert (add_to_crm.kind, add_to_crm.approval, add_to_crm.idempotent) == ("write", "never", True)
    assert add_to_crm.reverse is not None


def test_adding_a_crm_lead_twice_with_one_key_adds_it_once(gatehouse: Gatehouse) -> None:
    with running_in(gatehouse.rt):
        first = add_to_crm(
            {"email": "a@b.example", "company": "B", "role": "CTO", "score": 50},
            idempotency_key="run_1:add_to_crm#1",
        )
        again = add_to_crm(
            {"email": "a@b.example", "company": "B", "role": "CTO", "score": 50},
            idempotency_key="run_1:add_to_crm#1",
        )

    assert first == again
    assert crm(gatehouse) == [("a@b.example", "B", 50, "open")]


def test_company_names_match_regardless_of_case_punctuation_and_legal_suffix(
    gatehouse: Gatehouse,
) -> None:
    with running_in(gatehouse.rt):
        found = demo_crm.find_company("northwind payments, ltd.")
        by_free_mail = demo_crm.find_company("Nobody", "gmail.com")

    assert found is not None and found.domain == "northwind.example"
    assert by_free_mail is None


# -- ticket_triage with no model: a person classifies ------------------------------------


def test_refund_above_the_threshold_read_by_a_person_waits_for_finance_then_refunds(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("ticket_triage", BIG_REFUND_TICKET, user="carol")
    task = open_task(gatehouse, run, "classify_ticket")
    assert "ord_1002" in task.context["input"]

    waiting = answer_and_resume(gatehouse, task, BIG_REFUND_LABEL)

    assert waiting.status == "waiting"
    [approval] = gatehouse.run(run.id).approvals
    assert (approval.tool, approval.approvers, approval.four_eyes) == (
        "issue_refund",
        ["@finance-leads"],
        True,
    )
    assert approval.args == {
        "order_id": "ord_1002",
        "amount_cents": 150_00,
        "currency": "EUR",
        "reason": "support ticket T-100",
    }
    assert refunds(gatehouse) == []

    gatehouse.approve(approval.id, user="alice")
    done = gatehouse.resume(run.id)

    assert done is not None and done.status == "succeeded", done
    assert (done.output["route"], done.output["kind"]) == ("refunded", "refund")
    assert done.output["message"] == "refunded 150.00 EUR on ord_1002"
    assert refunds(gatehouse) == [("ord_1002", 150_00, "issued")]


def test_refund_under_the_threshold_is_issued_without_an_approval(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("ticket_triage", SMALL_REFUND_TICKET)

    done = answer_and_resume(
        gatehouse, open_task(gatehouse, run, "classify_ticket"), SMALL_REFUND_LABEL
    )

    assert done.status == "succeeded", done.error
    assert done.output["route"] == "refunded"
    assert gatehouse.run(run.id).approvals == []
    assert refunds(gatehouse) == [("ord_1003", 12_50, "issued")]


def test_refund_asked_by_someone_else_than_the_orders_customer_goes_to_billing(
    gatehouse: Gatehouse,
) -> None:
    ticket = {**SMALL_REFUND_TICKET, "customer_email": "mallory@example.com"}
    run = gatehouse.trigger("ticket_triage", ticket)

    done = answer_and_resume(
        gatehouse, open_task(gatehouse, run, "classify_ticket"), SMALL_REFUND_LABEL
    )

    assert (done.output["route"], done.output["queue"]) == ("queued", "billing")
    assert "not from ord_1003's customer" in done.output["message"]
    assert refunds(gatehouse) == []


def test_refund_of_more_than_is_left_goes_to_billing(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("ticket_triage", SMALL_REFUND_TICKET)
    label = {**SMALL_REFUND_LABEL, "amount": "20.00"}

    done = answer_and_resume(gatehouse, open_task(gatehouse, run, "classify_ticket"), label)

    assert (done.output["route"], done.output["queue"]) == ("queued", "billing")
    assert "only 12.50 EUR of order ord_1003 is left" in done.output["message"]


def test_refund_without_an_order_id_goes_to_billing(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("ticket_triage", {**BIG_REFUND_TICKET, "body": "Refund me please."})

    done = answer_and_resume(
        gatehouse,
        open_task(gatehouse, run, "classify_ticket"),
        {"kind": "refund", "confidence": 1.0},
    )

    assert (done.output["route"], done.output["queue"]) == ("queued", "billing")
    assert "no order id or amount" in done.output["message"]
    assert [c.name for c in gatehouse.run(run.id).calls] == ["classify_ticket", "route_to_queue"]


def test_rejected_refund_goes_to_billing_with_the_reason(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("ticket_triage", BIG_REFUND_TICKET, user="carol")
    answer_and_resume(gatehouse, open_task(gatehouse, run, "classify_ticket"), BIG_REFUND_LABEL)

    gatehouse.reject(gatehouse.run(run.id).approvals[0].id, user="bob", reason="used item")
    done = gatehouse.resume(run.id)

    assert done is not None and done.status == "succeeded", done
    assert (done.output["route"], done.output["queue"]) == ("queued", "billing")
    assert "used item" in done.output["message"]
    assert refunds(gatehouse) == []


@pytest.mark.parametrize(
    ("kind", "queue"), [("bug", "engineering"), ("question", "support"), ("other", "support")]
)
def test_other_kinds_go_to_their_teams_queue(gatehouse: Gatehouse, kind: str, queue: str) -> None:
    run = gatehouse.trigger("ticket_triage", BUG_TICKET)

    done = answer_and_resume(
        gatehouse, open_task(gatehouse, run, "classify_ticket"), {"kind": kind, "confidence": 1}
    )

    assert done.output == {
        "ticket_id": "T-102",
        "kind": kind,
        "route": "queued",
        "queue": queue,
        "message": f"{kind} ticket queued for {queue}",
        "refund_id": None,
    }


# -- with a model: the fake OpenAI server answers ----------------------------------------


@pytest.mark.parametrize(
    ("lead", "signals", "action", "tier"),
    [
        (BRIGHTWAVE_LEAD, BRIGHTWAVE_SIGNALS, "approval", "high"),
        (HELIOS_LEAD, HELIOS_SIGNALS, "added_to_crm", "mid"),
        (TINYBOX_LEAD, TINYBOX_SIGNALS, "archived", "low"),
    ],
    ids=["high", "mid", "low"],
)
def test_lead_read_by_the_model_is_routed_by_its_score(
    gatehouse_llm: Gatehouse,
    fake_openai: FakeOpenAI,
    lead: dict[str, str],
    signals: dict[str, Any],
    action: str,
    tier: str,
) -> None:
    unsure = {"verdict": "unsure", "reason": "A first contact.", "confidence": 0.9}
    fake_openai.script(reply_json(signals), reply_json(unsure))  # the validator reads the email

    run = gatehouse_llm.trigger("lead_qualify", lead)

    assert fake_openai.calls == (2 if action == "approval" else 1)
    [llm_call] = [c for c in gatehouse_llm.run(run.id).calls if c.name == "extract_lead"]
    assert (llm_call.status, llm_call.output) == ("succeeded", signals)
    assert llm_call.meta["answered_by"] == "model"
    assert llm_call.input["task"] == "extract"
    assert lead["message"] in llm_call.input["prompt"]
    if action == "approval":
        assert run.status == "waiting"
        [approval] = gatehouse_llm.run(run.id).approvals
        assert approval.tool == "send_intro_email"
        assert (approval.validator["verdict"], approval.validator["reason"]) == (
            "unsure",
            "A first contact.",
        )
        assert [t for t in gatehouse_llm.run(run.id).tasks] == []
    else:
        assert run.status == "succeeded", run.error
        assert (run.output["action"], run.output["tier"]) == (action, tier)


def test_lead_the_model_reads_with_low_confidence_goes_to_a_person(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({**BRIGHTWAVE_SIGNALS, "confidence": 0.4}))

    run = gatehouse_llm.trigger("lead_qualify", BRIGHTWAVE_LEAD)

    task = open_task(gatehouse_llm, run, "extract_lead")
    assert "below the bar of 0.6" in task.context["reason"]
    assert task.context["suggestion"]["company"] == "Brightwave Software"


def test_replay_of_a_lead_run_reuses_the_recorded_answer_without_calling_the_model(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(HELIOS_SIGNALS))
    run = gatehouse_llm.trigger("lead_qualify", HELIOS_LEAD)

    report = gatehouse_llm.replay(run.id)

    assert report.divergence is None and report.output_matches, report.to_json()
    assert fake_openai.calls == 1
    assert crm(gatehouse_llm) == [("max@helios.example", "Helios Health", 65, "open")]


def test_ticket_the_model_labels_a_refund_above_the_threshold_waits_for_an_approval(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(BIG_REFUND_LABEL))

    run = gatehouse_llm.trigger("ticket_triage", BIG_REFUND_TICKET, user="carol")

    assert run.status == "waiting", run.error
    [approval] = gatehouse_llm.run(run.id).approvals
    assert (approval.tool, approval.status, approval.args["amount_cents"]) == (
        "issue_refund",
        "pending",
        150_00,
    )
    assert kinds_and_names(gatehouse_llm, run.id) == [
        ("llm", "classify_ticket", "succeeded"),
        ("step", "to_cents", "succeeded"),
        ("tool", "find_order", "succeeded"),
        ("step", "check_refundable", "succeeded"),
        ("tool", "issue_refund", "awaiting_approval"),
    ]
    with gatehouse_llm.db.transaction() as conn:
        refunded = conn.execute(
            select(demo_tables.orders.c.refunded_cents).where(demo_tables.orders.c.id == "ord_1002")
        ).scalar_one()
    assert refunded == 0


def test_ticket_the_model_labels_with_low_confidence_goes_to_a_person(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({**BIG_REFUND_LABEL, "confidence": 0.6}))

    run = gatehouse_llm.trigger("ticket_triage", BIG_REFUND_TICKET, user="carol")

    task = open_task(gatehouse_llm, run, "classify_ticket")
    assert "below the bar of 0.8" in task.context["reason"]
    assert gatehouse_llm.run(run.id).approvals == []

    done = answer_and_resume(gatehouse_llm, task, {"kind": "question", "confidence": 1.0})

    assert (done.output["route"], done.output["queue"]) == ("queued", "support")
    assert fake_openai.calls == 1, "the person's answer is used; the model is not asked again"


def test_ticket_the_model_labels_a_bug_goes_to_engineering(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        reply_json({"kind": "bug", "confidence": 0.97, "order_id": None, "amount": None})
    )

    run = gatehouse_llm.trigger("ticket_triage", BUG_TICKET)

    assert run.status == "succeeded", run.error
    assert (run.output["route"], run.output["queue"]) == ("queued", "engineering")


# -- both databases --------------------------------------------------------------------------


def test_both_pipelines_write_their_demo_tables_on_sqlite_and_postgresql(
    any_db_url: str, clock: FakeClock
) -> None:
    database = Database(any_db_url)
    gatehouse = Gatehouse(database, clock=clock, directory=StaticDirectory(DIRECTORY))
    try:
        lead = gatehouse.trigger("lead_qualify", HELIOS_LEAD)
        crm_done = answer_and_resume(
            gatehouse, open_task(gatehouse, lead, "extract_lead"), HELIOS_SIGNALS
        )
        email = gatehouse.trigger("lead_qualify", BRIGHTWAVE_LEAD)
        answer_and_resume(
            gatehouse, open_task(gatehouse, email, "extract_lead"), BRIGHTWAVE_SIGNALS
        )
        gatehouse.approve(gatehouse.run(email.id).approvals[0].id, user="sam")
        email_done = gatehouse.resume(email.id)
        ticket = gatehouse.trigger("ticket_triage", SMALL_REFUND_TICKET)
        refund_done = answer_and_resume(
            gatehouse, open_task(gatehouse, ticket, "classify_ticket"), SMALL_REFUND_LABEL
        )

        assert crm_done.output["action"] == "added_to_crm"
        assert email_done is not None and email_done.output["action"] == "emailed"
        assert refund_done.output["route"] == "refunded"
        assert crm(gatehouse) == [("max@helios.example", "Helios Health", 65, "open")]
        assert [row[2] for row in outbox(gatehouse)] == ["sent"]
        assert refunds(gatehouse) == [("ord_1003", 12_50, "issued")]
    finally:
        database.dispose()
