"""The catalog's pipelines tested the way a pipeline author tests theirs: with the public kit,
`pipelines.testing` (a temporary database, the model scripted by call name through the real
openai client, fake or simulated tools, approvals decided in code). It checks the kit too: an
unscripted model call fails the test, a fake keeps the gate, a single step runs alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from pipelines.catalog import lead_qualify, refunds, ticket_triage
from pipelines.errors import FourEyesViolation, NotAnApprover
from pipelines.testing import Harness, Reply, UnscriptedModelCall

GROUPS = {"finance-leads": ["alice", "bob"], "sales-leads": ["sam"]}
BIG_REFUND = {
    "ticket_id": "T-100",
    "customer_email": "grace@example.com",
    "subject": "Broken on arrival",
    "body": "Order ord_1002 arrived broken. Please refund 150.00 EUR.",
}
REFUND_LABEL = {"kind": "refund", "confidence": 0.95, "order_id": "ord_1002", "amount": "150.00"}
LEAD = {
    "email": "dana@brightwave.example",
    "name": "Dana Reyes",
    "message": "I run platform engineering at Brightwave. Could we get a demo and pricing?",
}
SIGNALS = {
    "company": "Brightwave Software",
    "role": "VP Platform Engineering",
    "intent": "high",
    "confidence": 0.92,
}


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness(pipelines=["pipelines.catalog"], groups=GROUPS) as harness:
        yield harness


# -- ticket_triage -------------------------------------------------------------------------------


def test_triage_refund_over_100_waits_for_finance_then_refunds(h: Harness) -> None:
    h.model.answer("classify_ticket", REFUND_LABEL)

    waiting = h.run("ticket_triage", BIG_REFUND, user="carol")

    assert waiting.status == "waiting"
    approval = waiting.pending_approval()
    assert (approval.tool, approval.args["amount_cents"], approval.four_eyes) == (
        "issue_refund",
        150_00,
        True,
    )
    done = waiting.approve(user="alice")
    assert (done.status, done.output["route"]) == ("succeeded", "refunded")
    assert done.trail() == [
        ("llm", "classify_ticket", "succeeded"),
        ("step", "to_cents", "succeeded"),
        ("tool", "find_order", "succeeded"),
        ("step", "check_refundable", "succeeded"),
        ("tool", "issue_refund", "succeeded"),
    ]
    seen = h.model.requests_for("classify_ticket")
    assert len(seen) == 1 and "ord_1002" in seen[0].prompt
    assert seen[0].response_format["json_schema"]["name"] == "TicketLabel"
    assert done.call("classify_ticket").meta["answered_by"] == "model"


def test_triage_the_person_who_asked_may_not_approve_their_refund(h: Harness) -> None:
    h.model.answer("classify_ticket", REFUND_LABEL)
    waiting = h.run("ticket_triage", BIG_REFUND, user="alice")

    with pytest.raises(FourEyesViolation, match="four-eyes"):
        waiting.approve(user="alice")

    assert waiting.approve(user="bob").output["route"] == "refunded"


def test_triage_rejected_refund_goes_to_billing_with_the_reason(h: Harness) -> None:
    h.model.answer("classify_ticket", REFUND_LABEL)

    done = h.run("ticket_triage", BIG_REFUND, user="carol").reject(user="bob", reason="used")

    assert (done.output["route"], done.output["queue"]) == ("queued", "billing")
    assert "used" in done.output["message"]


def test_triage_simulated_refund_keeps_the_gate_and_touches_no_order(h: Harness) -> None:
    simulated = h.simulate(refunds.issue_refund)
    h.model.answer("classify_ticket", REFUND_LABEL)

    waiting = h.run("ticket_triage", BIG_REFUND, user="carol")
    assert waiting.status == "waiting" and simulated.calls == []
    done = waiting.approve(user="alice")

    assert [a.amount_cents for a in simulated.calls] == [150_00]
    assert done.call("issue_refund").output["status"] == "simulated"


def test_triage_an_answer_failing_the_schema_is_asked_again(h: Harness) -> None:
    h.model.script("classify_ticket", Reply(content="refund, I think"))
    h.model.answer("classify_ticket", {**REFUND_LABEL, "kind": "bug"})

    done = h.run("ticket_triage", BIG_REFUND)

    assert done.output["queue"] == "engineering"
    assert len(h.model.requests_for("classify_ticket")) == 2
    assert len(done.call("classify_ticket").meta["attempts"]) == 2


def test_triage_a_model_that_errs_or_refuses_sends_the_ticket_to_a_person(h: Harness) -> None:
    h.model.script("classify_ticket", Reply(status=503), Reply(refusal="I can't help with that."))

    erred = h.run("ticket_triage", BIG_REFUND)
    refused = h.run("ticket_triage", BIG_REFUND)

    assert "could not be reached" in erred.open_task().context["reason"]
    assert refused.open_task().context["reason"] == "the model refused: I can't help with that."


def test_triage_an_answer_scripted_always_answers_every_run(h: Harness) -> None:
    h.model.answer("classify_ticket", {"kind": "bug", "confidence": 0.9}, always=True)

    queues = [h.run("ticket_triage", BIG_REFUND).output["queue"] for _ in range(3)]

    assert queues == ["engineering"] * 3


def test_triage_without_a_model_a_person_classifies() -> None:
    with Harness(pipelines=["pipelines.catalog"], model=False) as h:
        waiting = h.run("ticket_triage", BIG_REFUND)
        task = waiting.open_task()
        assert task.context["reason"].startswith("no model is configured")

        done = waiting.answer({"kind": "question", "confidence": 1.0}, user="olga")

    assert (done.output["queue"], done.call("classify_ticket").meta["answered_by"]) == (
        "support",
        "human",
    )


def test_an_unscripted_model_call_fails_the_test_naming_the_call(h: Harness) -> None:
    with pytest.raises(UnscriptedModelCall, match=r"h\.model\.answer\('classify_ticket'"):
        h.run("ticket_triage", BIG_REFUND)


def test_the_model_step_of_triage_runs_alone(h: Harness) -> None:
    h.model.answer("classify_ticket", {"kind": "bug", "confidence": 0.5})

    def classify(ctx: ticket_triage.Context, ticket: ticket_triage.SupportTicket) -> object:
        return ctx.llm(
            "classify_ticket",
            task="classify",
            prompt=ticket_triage.ticket_prompt(ticket),
            output=ticket_triage.TicketLabel,
            min_confidence=ticket_triage.CLASSIFY_MIN_CONFIDENCE,
        )

    step = h.run_step(classify, ticket_triage.SupportTicket.model_validate(BIG_REFUND))

    assert step.status == "waiting"  # 0.5 is under the bar of 0.8: a person classifies
    assert "below the bar of 0.8" in step.open_task().context["reason"]
    assert step.answer({"kind": "refund", "confidence": 1}).output["kind"] == "refund"


# -- refund_request ---------------------------------------------------------------------------------


def test_refund_request_reads_a_faked_order_and_expires_undecided(h: Harness) -> None:
    order = {
        "id": "ord_9",
        "customer": "x@example.com",
        "amount_cents": 500_00,
        "currency": "EUR",
        "refunded_cents": 0,
    }
    lookup = h.fake(refunds.find_order, order)
    request = {"order_id": "ord_9", "amount": "300.00", "reason": "never arrived"}

    waiting = h.run("refund_request", request, user="carol")
    assert [a.order_id for a in lookup.calls] == ["ord_9"]
    assert waiting.pending_approval().args["amount_cents"] == 300_00

    h.clock.advance(timedelta(hours=25))
    [expired] = h.expire_due()
    assert expired.status == "expired"
    h.resume_queued()
    assert h.result(waiting.id).status == "rejected"


def test_refund_request_under_100_needs_nobody_and_undo_reverses_it(h: Harness) -> None:
    done = h.run("refund_request", {"order_id": "ord_1003", "amount": "12.50", "reason": "size"})

    assert (done.status, done.output["status"], done.approvals) == ("succeeded", "refunded", [])
    h.undo(done.call("issue_refund").id, user="alice")
    undone = h.result(done.id)
    assert undone.call("issue_refund", kind="tool").reversed_by is not None
    assert undone.trail()[-1] == ("reversal", "issue_refund", "succeeded")


# -- lead_qualify -----------------------------------------------------------------------------------


def test_lead_with_an_unsure_validator_waits_for_a_sales_lead_then_emails(h: Harness) -> None:
    h.model.answer("extract_lead", SIGNALS)
    unsure = {"verdict": "unsure", "reason": "A first contact.", "confidence": 0.9}
    h.model.answer("validator:send_intro_email", unsure)

    waiting = h.run("lead_qualify", LEAD)

    approval = waiting.pending_approval()
    assert (approval.tool, approval.validator["verdict"]) == ("send_intro_email", "unsure")
    with pytest.raises(NotAnApprover, match="@sales-leads"):
        waiting.approve(user="alice")
    done = waiting.approve(user="sam")
    assert (done.status, done.output["action"]) == ("succeeded", "emailed")
    assert [name for _, name, _ in done.trail()] == [
        "extract_lead",
        "look_up_firmographics",
        "score_lead",
        "validator:send_intro_email",
        "send_intro_email",
    ]


def test_lead_validator_approval_sends_without_a_person(h: Harness) -> None:
    h.model.answer("extract_lead", SIGNALS)
    h.model.answer(
        "validator:send_intro_email",
        {"verdict": "approve", "reason": "Accurate and polite.", "confidence": 0.95},
    )

    done = h.run("lead_qualify", LEAD)

    assert (done.status, done.output["action"], done.approvals) == ("succeeded", "emailed", [])


def test_lead_scored_mid_goes_to_the_faked_crm(h: Harness) -> None:
    crm = h.fake(
        lead_qualify.add_to_crm,
        lambda args: {"lead_id": 7, "email": args.email, "status": "open"},
    )
    h.model.answer("extract_lead", {**SIGNALS, "company": "Helios Health", "role": "IT Manager"})

    done = h.run("lead_qualify", {**LEAD, "email": "max@helios.example"})

    assert done.output["action"] == "added_to_crm", done.error
    assert [a.company for a in crm.calls] == ["Helios Health"]


# -- on PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_harness_runs_on_a_database_it_is_given(postgres_url: str) -> None:
    with Harness(pipelines=["pipelines.catalog"], groups=GROUPS, database=postgres_url) as h:
        h.model.answer("classify_ticket", REFUND_LABEL)

        done = h.run("ticket_triage", BIG_REFUND, user="carol").approve(user="bob")

        assert (done.status, done.output["route"]) == ("succeeded", "refunded")
        assert h.db.is_postgres
