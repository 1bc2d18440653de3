"""Display types: money, percentages, dates, ids and links in a tool's arguments read as what they
are (`180.00 EUR`, never `amount_cents 18000`) on the approval card, its confirm dialog, the CLI
and the review thread; and a tool's context block from the run's recorded reads (the refund
card shows the order `find_order` fetched)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pytest
import structlog.testing
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from bot.cli.main import app
from bot.demo.history import seed_history
from bot.formatting import amount, percent, shown_values
from bot.slack import cards, review_cards
from bot.slack.shown_fields import shown_sections
from pipelines import Context, pipeline, tool
from pipelines.display import Date, Id, Link, Money, Percent, display_marks
from pipelines.operations.review import ReviewItemView
from pipelines.outbox import OutboxSender
from pipelines.tool_context import RecordedReads
from pipelines.views import ApprovalView
from storage.db import Database
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world

# ord_1002 is the demo connector's 250.00 EUR order of grace@example.com; the demo's refund
# card (a refund over 100.00 asked for in Slack) is this same run: refund_request → find_order
# → issue_refund, waiting for a finance lead.
DEMO_REFUND = {"order_id": "ord_1002", "amount": "180.00", "reason": "never arrived"}
HOSTILE = "<!channel> <@U_BOB> <https://evil.example|click>"


# -- a tool whose context function fails, one whose context says hostile things ------------


class PlanArgs(BaseModel):
    customer_id: Annotated[str, Id()]
    discount: Annotated[float, Percent()]
    starts: Annotated[date, Date()]
    invoice: Annotated[str, Link()]
    fee_cents: Annotated[int, Money(currency="JPY")]


class PlanChanged(BaseModel):
    ok: bool


class BrokenContext(RuntimeError):
    pass


def failing_context(args: PlanArgs, reads: RecordedReads) -> list[str]:
    raise BrokenContext("the CRM field is gone")


def hostile_context(args: PlanArgs, reads: RecordedReads) -> list[str]:
    return [f"note from the CRM: {HOSTILE}"]


@tool(kind="write", approvers=["*"], context=failing_context)
def dt_change_plan(args: PlanArgs, *, idempotency_key: str) -> PlanChanged:
    """Change a customer's plan (test tool)."""
    return PlanChanged(ok=True)


@tool(kind="write", approvers=["*"], context=hostile_context)
def dt_change_plan_noted(args: PlanArgs, *, idempotency_key: str) -> PlanChanged:
    """Change a customer's plan, with a note (test tool)."""
    return PlanChanged(ok=True)


class PlanRequest(BaseModel):
    noted: bool = False
    invoice: str = "https://billing.example/inv/77?x=1&y=2"


@pipeline("dt_plan_change", input=PlanRequest)
def dt_plan_change(ctx: Context, request: PlanRequest) -> dict[str, Any]:
    args = PlanArgs(
        customer_id="00042",
        discount=0.125,
        starts=date(2026, 12, 24),
        invoice=request.invoice,
        fee_cents=1500,
    )
    done = ctx.tool(dt_change_plan_noted if request.noted else dt_change_plan, args)
    return {"ok": done.ok}


# -- helpers ---------------------------------------------------------------------------------


def texts(blocks: Any) -> str:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def confirm_text(card: dict[str, Any]) -> str:
    [buttons] = [b for b in card["blocks"] if b["type"] == "actions"]
    approve = next(e for e in buttons["elements"] if e["action_id"] == cards.APPROVE_ACTION)
    return str(approve["confirm"]["text"]["text"])


def demo_refund(world: SlackWorld) -> tuple[str, dict[str, Any]]:
    run = world.gatehouse.trigger("refund_request", DEMO_REFUND, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return run.id, card


# -- the demo's refund card ----------------------------------------------------------------


@pytest.mark.usefixtures("slack_mode")
def test_the_demo_refund_card_reads_money_and_shows_the_order_find_order_fetched(
    world: SlackWorld,
) -> None:
    run_id, card = demo_refund(world)
    shown = texts(card["blocks"])
    assert "*amount*\n180.00 EUR" in shown
    assert "18000" not in shown and "amount_cents" not in shown
    assert "*currency*" not in shown, "the currency is read with the amount, not on its own"
    # The context block: what find_order read, so the approver sees what is left to refund.
    assert "What the run already read" in shown
    for fact in (
        "*order*\n`ord_1002`",
        "*customer*\n`grace@example.com`",
        "*order total*\n250.00 EUR",
        "*refunded so far*\n0.00 EUR",
        "*left to refund*\n250.00 EUR",
    ):
        assert fact in shown, fact
    dialog = confirm_text(card)
    assert "180.00 EUR" in dialog and "18000" not in dialog

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    assert world.gatehouse.run(run_id).status == "succeeded"
    decided = texts(world.card(card["ts"])["blocks"])
    assert "180.00 EUR" in decided and "18000" not in decided


def test_the_refund_card_shows_what_an_earlier_refund_left(world: SlackWorld) -> None:
    first = world.gatehouse.trigger(
        "refund_request", {**DEMO_REFUND, "amount": "50.00"}, user="U_CAROL", source="slack"
    )
    assert first.status == "succeeded", first.error  # under 100.00: no approval
    run_id, card = demo_refund(world)
    shown = texts(card["blocks"])
    assert "*refunded so far*\n50.00 EUR" in shown and "*left to refund*\n200.00 EUR" in shown


# -- a context function that fails, or says hostile things -----------------------------------


def test_a_context_function_that_raises_leaves_the_card_whole_and_is_logged(
    world: SlackWorld,
) -> None:
    with structlog.testing.capture_logs() as logs:
        run = world.gatehouse.trigger("dt_plan_change", {}, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    shown = texts(card["blocks"])
    assert "context unavailable" in shown
    assert "Approve" in shown and "dt_change_plan" in shown
    [failed] = [e for e in logs if e["event"] == "tool_context.failed"]
    assert failed["tool"] == "dt_change_plan" and failed["error_type"] == "BrokenContext"


def test_context_lines_are_escaped(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("dt_plan_change", {"noted": True}, user="U_CAROL")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    shown = texts(card["blocks"])
    assert "&lt;!channel&gt; &lt;@U_BOB&gt; &lt;https://evil.example|click&gt;" in shown
    assert "<!channel>" not in shown and "<@U_BOB>" not in shown


def test_every_mark_reads_as_what_it_is_on_the_card(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("dt_plan_change", {"noted": True}, user="U_CAROL")
    [card] = world.approval_cards()
    shown = texts(card["blocks"])
    assert "*customer_id*\n`00042`" in shown
    assert "*discount*\n12.5%" in shown
    assert "*starts*\n2026-12-24" in shown
    assert "*invoice*\n<https://billing.example/inv/77?x=1&amp;y=2>" in shown
    assert "*fee*\n1,500 JPY" in shown  # the yen has no minor unit
    assert run.id in shown


def test_a_link_that_could_forge_a_token_is_not_linked(world: SlackWorld) -> None:
    world.gatehouse.trigger("dt_plan_change", {"noted": True, "invoice": "https://x|<!here>"})
    [card] = world.approval_cards()
    shown = texts(card["blocks"])
    assert "<https://x" not in shown and "<!here>" not in shown
    assert "`https://x|&lt;!here&gt;`" in shown


@pytest.mark.usefixtures("slack_mode")
def test_app_homes_waiting_list_reads_the_refund_in_money(world: SlackWorld) -> None:
    demo_refund(world)
    world.slack.app_home_opened("U_ALICE")
    world.settle()
    home = world.fake.home("U_ALICE")
    assert home is not None
    shown = texts(home["blocks"])
    assert "`issue_refund` (spend) *order_id* `ord_1002` · *amount* 180.00 EUR" in shown
    assert "18000" not in shown


# -- the CLI and the review thread -----------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Any) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", '{"finance-leads": ["alice", "bob"]}')
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "pipelines.catalog")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_cli_pending_and_run_show_money_as_money(cli_env: str) -> None:
    triggered = cli(
        "trigger", "refund_request", "--input", json.dumps(DEMO_REFUND), "--as", "carol"
    )
    assert "amount 180.00 EUR" in triggered and "amount_cents" not in triggered
    pending = cli("pending")
    assert "issue_refund (spend): order_id ord_1002, amount 180.00 EUR, reason never arrived" in (
        pending
    )
    assert "18000" not in pending
    run_id = json.loads(cli("pending", "--json"))[0]["run_id"]
    detail = cli("run", run_id)
    assert "issue_refund: order_id ord_1002, amount 180.00 EUR" in detail
    # The record keeps the value as validated: --json is what scripts read.
    [approval] = json.loads(cli("run", run_id, "--json"))["approvals"]
    assert approval["args"]["amount_cents"] == 18000


def test_the_review_thread_shows_the_refund_in_money(world: SlackWorld) -> None:
    run_id, card = demo_refund(world)
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    run = world.gatehouse.run(run_id)
    item = ReviewItemView(
        id=1, week_id=1, position=1, run_id=run_id, reply_ts=None, verdict=None,
        category=None, note=None, expected=None, reviewer=None, reviewed_at=None,
    )  # fmt: skip
    shown = texts(review_cards.item_blocks(item, run, 1, command="/gatehouse"))
    assert "issue_refund — succeeded, approved by <@U_BOB>" in shown
    assert "\n    *order_id* `ord_1002` · *amount* 180.00 EUR" in shown
    assert "18000" not in shown


# -- the formatting itself -------------------------------------------------------------------


def test_one_function_formats_every_mark() -> None:
    assert amount(18000, "EUR", minor_units=True) == "180.00 EUR"
    assert amount(123456789, "usd", minor_units=True) == "1,234,567.89 USD"
    assert amount(1250, "KWD", minor_units=True) == "1.250 KWD"
    assert amount("180.5", "EUR", minor_units=False) == "180.50 EUR"
    assert percent(0.125) == "12.5%" and percent(40, scale=100) == "40%"
    as_text = shown_values({"discount": "0.125"}, {"discount": Percent()})  # a Decimal as JSON
    assert [s.text for s in as_text] == ["12.5%"]
    marks = display_marks(PlanArgs)
    assert set(marks) == {"customer_id", "discount", "starts", "invoice", "fee_cents"}
    shown = shown_values(
        {"fee_cents": "••••", "discount": None, "customer_id": 42}, marks
    )  # a sealed value, a null, an id that looks like a number
    assert [(s.label, s.text, s.kind) for s in shown] == [
        ("fee_cents", "••••", "value"),
        ("discount", "null", "value"),
        ("customer_id", "42", "id"),
    ]
    blocks, _ = shown_sections(shown, title="*Arguments*")
    assert "*customer_id*\n`42`" in texts(blocks)


class UnmarkedPlanArgs(BaseModel):
    customer_id: str
    discount: float
    starts: date
    invoice: str
    fee_cents: int


def test_marks_change_neither_the_schema_nor_what_validates() -> None:
    """A mark is for people only: the JSON schema (what a model or a form is given) and the
    validated value are those of the same model without marks."""
    unmarked = UnmarkedPlanArgs.model_json_schema()
    assert PlanArgs.model_json_schema() == {**unmarked, "title": "PlanArgs"}
    given = {"customer_id": "7", "discount": 0.5, "starts": "2026-12-24", "invoice": "x"}
    marked = PlanArgs.model_validate({**given, "fee_cents": 1}).model_dump()
    assert marked == UnmarkedPlanArgs.model_validate({**given, "fee_cents": 1}).model_dump()


class Priced(BaseModel):
    price_cents: Annotated[int, Money(currency_field="currency"), Field(title="price")]
    currency: str


def test_a_field_title_names_the_value() -> None:
    [shown] = shown_values(
        {"price_cents": 999, "currency": "EUR"}, display_marks(Priced), {"price_cents": "price"}
    )
    assert (shown.label, shown.text) == ("price", "9.99 EUR")


# -- the demo's own waiting refund, as `make demo` posts it ------------------------------------


def test_the_demo_historys_waiting_refund_card_reads_money_and_the_orders_total(
    fake_slack: FakeSlack, sqlite_url: str
) -> None:
    """`make demo` seeds its history and leaves a refund over 100.00 waiting (bot/demo/history.py
    `_plan_waiting`); the card its bot posts for it reads the amount and the order as money."""
    end = datetime(2026, 11, 25, 17, 30, tzinfo=UTC)
    database = Database(sqlite_url)
    try:
        seed_history(database, end=end, days=1)
    finally:
        database.dispose()
    with slack_world(fake_slack, sqlite_url, FakeClock(end)) as world:
        sender = world.gatehouse.rt.sender
        assert isinstance(sender, OutboxSender)
        sender.deliver_due()
        [refund] = [
            a
            for a in world.gatehouse.pending()
            if isinstance(a, ApprovalView)
            and a.tool == "issue_refund"
            and a.trigger_user == "U_CAROL"  # alice's own one waits too (four-eyes)
        ]
        [card] = [m for m in world.approval_cards() if refund.id in texts(m.get("blocks"))]
    shown = texts(card["blocks"])
    cents = refund.args["amount_cents"]
    money = f"{cents // 100:,}.{cents % 100:02d} EUR"
    assert f"*amount*\n{money}" in shown and str(cents) not in shown
    assert f"*order total*\n{money}" in shown  # the demo refunds the whole order
    assert "*refunded so far*\n0.00 EUR" in shown
    assert money in confirm_text(card)
