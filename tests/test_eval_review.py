"""The weekly review feeds evals: the Flag modal's "what it should have been" form (built from the
pipeline's output schema) is stored as `expected`, and the flagged export is a test set
`gatehouse eval` reads as it stands."""

from __future__ import annotations

import json
from typing import Any

from bot.slack.review_cards import (
    EXPECTED_FIELD_PREFIX,
    flag_from_submission,
    flag_modal,
    item_blocks,
)
from pipelines import Gatehouse
from pipelines.evaluation import evaluate, output_schema, parse_dataset
from pipelines.operations import review
from pipelines.operations.review import reviewed_cases
from tests.fakes.clock import FakeClock
from tests.test_review import NOW, _pick, seed_runs


def _blocks_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if "block_id" in b}


def test_the_flag_modal_offers_the_output_schema_as_an_optional_form() -> None:
    schema = output_schema("ticket_triage")
    assert schema is not None
    view = flag_modal(7, "run_1", "ticket_triage", schema)
    blocks = _blocks_by_id(view)
    assert view["private_metadata"] == "7:ticket_triage"
    kind = blocks[f"{EXPECTED_FIELD_PREFIX}kind"]
    assert kind["optional"] is True
    assert kind["element"]["type"] == "static_select"
    assert [o["value"] for o in kind["element"]["options"]] == [
        "refund",
        "bug",
        "question",
        "other",
    ]
    assert blocks[f"{EXPECTED_FIELD_PREFIX}route"]["element"]["type"] == "static_select"
    assert all(b.get("optional") for k, b in blocks.items() if k != "category")
    assert "expected" in blocks  # the JSON box stays, for outputs a form cannot hold

    # Without a pipeline (a reply posted before this change) the JSON box alone.
    plain = _blocks_by_id(flag_modal(7, "run_1"))
    assert set(plain) == {"category", "note", "expected"}
    assert output_schema("no_such_pipeline") is None


def test_the_filled_fields_become_expected_and_empty_ones_are_left_out() -> None:
    schema = output_schema("ticket_triage")
    values = {
        "category": {"category": {"selected_option": {"value": "wrong_output"}}},
        f"{EXPECTED_FIELD_PREFIX}kind": {"kind": {"selected_option": {"value": "bug"}}},
        f"{EXPECTED_FIELD_PREFIX}queue": {"queue": {"value": "engineering"}},
        f"{EXPECTED_FIELD_PREFIX}route": {"route": {"selected_option": None}},
        f"{EXPECTED_FIELD_PREFIX}refund_id": {"refund_id": {"value": None}},
        "expected": {"expected": {"value": '{"message": "bug ticket queued"}'}},
    }
    flag, errors = flag_from_submission(values, schema)
    assert errors == {}
    assert flag["expected"] == {
        "message": "bug ticket queued",
        "kind": "bug",
        "queue": "engineering",
    }
    nothing, _ = flag_from_submission(
        {"category": {"category": {"selected_option": {"value": "policy"}}}}, schema
    )
    assert nothing["expected"] is None


def test_the_flag_button_carries_the_pipeline(gatehouse: Gatehouse) -> None:
    from pipelines.views import Run

    run = Run("run_1", "ticket_triage", "succeeded", {}, {}, None, None, NOW, NOW)
    week_item = review.ReviewItemView(
        id=3,
        week_id=1,
        position=1,
        run_id="run_1",
        reply_ts=None,
        verdict=None,
        category=None,
        note=None,
        expected=None,
        reviewer=None,
        reviewed_at=None,
    )
    actions = item_blocks(week_item, run, 1, command="/gatehouse")[-1]
    assert actions["elements"][1]["value"] == "3:run_1:ticket_triage"


def test_a_flagged_export_is_a_test_set_eval_reads(gatehouse: Gatehouse, clock: FakeClock) -> None:
    ticket = {
        "ticket_id": "T-9",
        "customer_email": "ada@example.com",
        "subject": "Crash",
        "body": "It crashes.",
    }
    seed_runs(gatehouse.db, 3, input=ticket)
    week = _pick(gatehouse)
    first, second, third = week.items
    review.flag(
        gatehouse.rt,
        first.id,
        reviewer="U_ALICE",
        category="wrong_output",
        note="a crash is a bug",
        expected={"kind": "bug", "queue": "engineering"},
    )
    review.flag(gatehouse.rt, second.id, reviewer="U_ALICE", category="policy", note=None)
    review.looks_right(gatehouse.rt, third.id, reviewer="U_BOB")

    cases = reviewed_cases(gatehouse.rt, since=NOW.replace(year=2025), flagged_only=True)
    text = "\n".join(json.dumps(case) for case in cases)
    dataset = parse_dataset(text, name="flagged.jsonl", pipeline="ticket_triage")
    assert len(dataset.cases) == 2
    with_expected = [c for c in dataset.cases if c.expected is not None]
    assert [(c.expected, c.note) for c in with_expected] == [
        ({"kind": "bug", "queue": "engineering"}, "a crash is a bug")
    ]
    assert all(c.input == ticket for c in dataset.cases)
    report = evaluate(gatehouse.rt, "ticket_triage", dataset, store=False)
    assert [r.status for r in report.results] == ["human", "human"]  # no model configured
