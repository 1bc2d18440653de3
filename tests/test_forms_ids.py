"""Block Kit ids from schema field names are bounded: a 300-character name, or one with spaces,
dots or unicode, becomes a short stable `block_id`/`action_id` that Slack (here the sandbox's
Block Kit validator) accepts, and a submission is still read back onto the right fields."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bot.sandbox.blockkit import check_view
from bot.slack import forms
from bot.slack.review_cards import flag_from_submission, flag_modal
from pipelines import Context, pipeline
from tests.slack_harness import SlackWorld
from tests.test_cards import task

SLACK_ID_LIMIT = 255  # block_id and action_id, Block Kit reference
LONG = "note_" + "x" * 295  # a valid Python name of 300 characters
assert len(LONG) == 300

# The engine stores a task's answer dumped by field name (not alias), so the model also takes
# its names; the form sees the aliases, which is what its schema's properties are.
FidOdd = create_model(
    "FidOdd",
    __module__=__name__,
    __config__=ConfigDict(validate_by_name=True, validate_by_alias=True),
    **{
        LONG: (str, ...),
        "due_date_x": (date, Field(alias="due date")),
        "order_count": (int, Field(alias="order.count", ge=1)),
        "first_name": (str, Field(alias="prénom")),
        "qty": (Literal["few", "many"], Field(alias="数量")),
        "ok": (bool, Field(alias="is it ok?")),
        "kind": (str, ...),
    },
)
ODD_NAMES = [LONG, "due date", "order.count", "prénom", "数量", "is it ok?"]


class FidInput(BaseModel):
    text: str


@pipeline("fid_odd_names", input=FidInput)
def fid_odd_names(ctx: Context, given: FidInput) -> dict[str, Any]:
    answer = ctx.ask_human("fill", f"Fill in {given.text}", output=FidOdd)
    return answer.model_dump(mode="json", by_alias=True)


def _inputs(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if b.get("type") == "input"]


def test_field_ids_are_short_plain_stable_and_distinct() -> None:
    ids = [forms.field_id(name) for name in [*ODD_NAMES, "kind", "order_id"]]
    assert all(len(i) <= 64 and re.fullmatch(r"[A-Za-z0-9_.-]+", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert forms.field_id("kind") == "kind" and forms.field_id("order_id") == "order_id"
    # Readable, and the same in every process (SHA-256, not the salted hash()).
    digest = hashlib.sha256(b"order.count").hexdigest()[:16]
    assert forms.field_id("order.count") == f"order_count.{digest}"
    assert forms.field_id("prénom").startswith("prenom.")
    assert forms.field_id(LONG) == forms.field_id("note_" + "x" * 295)
    # Names that differ only past the readable prefix still get different ids.
    assert forms.field_id(LONG) != forms.field_id(LONG[:-1] + "y")


def test_an_answer_form_with_odd_names_is_one_slack_accepts() -> None:
    schema = FidOdd.model_json_schema()
    assert set(ODD_NAMES) <= set(schema["properties"])
    view = forms.answer_modal(task(output_schema=schema, context=None))
    assert check_view(view) == []
    for block in _inputs(view):
        assert len(block["block_id"]) <= SLACK_ID_LIMIT
        assert len(block["element"]["action_id"]) <= SLACK_ID_LIMIT
    labels = {b["label"]["text"] for b in _inputs(view)}
    assert "due date" in {label.lower() for label in labels}  # the name still reads as itself


def test_validation_errors_land_on_the_odd_fields_blocks() -> None:
    schema = FidOdd.model_json_schema()
    view = forms.answer_modal(task(output_schema=schema, context=None))
    block_ids = {b["block_id"] for b in _inputs(view)}
    state = {forms.field_id("order.count"): {forms.field_id("order.count"): {"value": "0"}}}
    answer = forms.answer_from_submission(schema, state)
    with pytest.raises(ValidationError) as caught:
        FidOdd.model_validate(answer)
    errors = forms.errors_for_modal(caught.value, schema)
    assert forms.field_id("order.count") in errors and forms.field_id(LONG) in errors
    assert set(errors) <= block_ids


def test_the_review_flag_form_bounds_the_same_ids_and_reads_them_back() -> None:
    schema = FidOdd.model_json_schema()
    view = flag_modal(7, "run_1", "fid_odd_names", schema)
    assert check_view(view) == []
    long_block = next(b for b in _inputs(view) if b["block_id"].endswith(forms.field_id(LONG)))
    values = {
        "category": {"category": {"selected_option": {"value": "wrong_output"}}},
        long_block["block_id"]: {long_block["element"]["action_id"]: {"value": "should be this"}},
    }
    flag, _errors = flag_from_submission(values, schema)
    assert flag["expected"] == {LONG: "should be this"}


def test_odd_field_names_round_trip_through_the_answer_modal(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("fid_odd_names", {"text": "the form"}, user="U_CAROL")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
    world.settle()
    assert world.fake.rejected == []  # views.update took the form as Slack would
    [opened] = world.fake.views
    modal = world.fake.view(opened["id"])
    assert modal["callback_id"] == forms.ANSWER_CALLBACK
    by_name = {
        name: forms.field_id(name)
        for name in [*ODD_NAMES, "kind"]
        if forms.field_id(name) in {b["block_id"] for b in _inputs(modal)}
    }
    assert set(by_name) == {*ODD_NAMES, "kind"}
    shown = {
        LONG: "a long one",
        "due date": "2026-01-02",
        "order.count": "3",
        "prénom": "Zoé",
        "数量": "many",
        "is it ok?": "true",
        "kind": "plain",
    }
    bad = world.slack.view_submission(
        forms.ANSWER_CALLBACK,
        {by_name[n]: {by_name[n]: "0" if n == "order.count" else v} for n, v in shown.items()},
        user_id="U_OLGA",
        view_id=opened["id"],
    )
    assert bad.json["response_action"] == "errors"
    assert list(bad.json["errors"]) == [by_name["order.count"]]
    good = world.slack.view_submission(
        forms.ANSWER_CALLBACK,
        {by_name[n]: {by_name[n]: v} for n, v in shown.items()},
        user_id="U_OLGA",
        view_id=opened["id"],
    )
    assert good.status == 200 and not good.text
    world.settle()
    finished = world.gatehouse.run(run.id)
    assert finished.status == "succeeded", finished.error
    assert finished.output == {
        LONG: "a long one",
        "due date": "2026-01-02",
        "order.count": 3,
        "prénom": "Zoé",
        "数量": "many",
        "is it ok?": True,
        "kind": "plain",
    }
