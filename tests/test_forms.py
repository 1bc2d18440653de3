"""Task forms: a modal from the output schema that slack_sdk accepts, the submission back into JSON
the same pydantic model validates, and its validation errors back onto the modal's blocks."""

from __future__ import annotations

import enum
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError, model_validator

from bot.slack import forms
from tests.test_cards import HOSTILE_TEXT, check_escaped, check_view, task


class Queue(enum.Enum):
    BILLING = "billing"
    SHIPPING = "shipping"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    zip: str


class Triage(BaseModel):
    label: Literal["refund", "question", "spam"] = Field(description="Which way the ticket goes")
    queue: Queue
    priority: Priority | None = None
    urgent: bool
    escalate: bool = False
    count: int = Field(ge=1, le=10)
    limit: int = Field(gt=0, lt=100)
    score: float = Field(ge=0, le=1)
    amount: float = Field(gt=0)
    note: str | None = None
    summary: str = Field(max_length=500)
    title: str = Field(max_length=80)
    customer: str
    address: Address
    tags: list[Literal["vip", "late"]] = []
    due: date | None = None
    kind: Literal["ticket"] = "ticket"
    attempts: int = 3

    @model_validator(mode="after")
    def refunds_need_an_amount(self) -> Triage:
        if self.label == "refund" and self.amount > 1000:
            raise ValueError("refunds over 1000 need a manager")
        return self


SCHEMA = Triage.model_json_schema()
SUGGESTION = {
    "label": "refund",
    "queue": "billing",
    "priority": 2,
    "urgent": True,
    "count": 3,
    "limit": 7,
    "score": 0.25,
    "amount": 1e-05,
    "summary": "Customer was charged twice.",
    "title": "Double charge",
    "customer": "ACME",
    "address": {"street": "1 Main St", "zip": "12345"},
    "tags": ["vip"],
    "due": "2024-06-01",
}


def triage_task(**overrides: Any) -> Any:
    t = task(output_schema=SCHEMA, name="triage")
    context = {**t.context, "suggestion": SUGGESTION}
    return replace(t, context=context, **overrides)


def blocks_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def option(value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": value}, "value": value}


def state(**fields: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """`view.state.values` as Slack sends it: block id → action id → element state."""
    return {name: {name: element} for name, element in fields.items()}


FULL_STATE = state(
    label={"type": "static_select", "selected_option": option("refund")},
    queue={"type": "static_select", "selected_option": option("shipping")},
    priority={"type": "static_select", "selected_option": option("2")},
    urgent={"type": "radio_buttons", "selected_option": option("false")},
    escalate={"type": "radio_buttons", "selected_option": None},
    count={"type": "number_input", "value": "4"},
    limit={"type": "number_input", "value": "99"},
    score={"type": "number_input", "value": "0.5"},
    amount={"type": "number_input", "value": "12.75"},
    note={"type": "plain_text_input", "value": None},
    summary={"type": "plain_text_input", "value": "Charged twice\nfor order A-1"},
    title={"type": "plain_text_input", "value": "Double charge"},
    customer={"type": "plain_text_input", "value": "ACME <!channel>"},
    address={"type": "plain_text_input", "value": '{"street": "1 Main St", "zip": "12345"}'},
    tags={"type": "multi_static_select", "selected_options": [option("vip"), option("late")]},
    due={"type": "datepicker", "selected_date": "2024-06-01"},
    kind={"type": "static_select", "selected_option": option("ticket")},
    attempts={"type": "number_input", "value": None},
)


def test_answer_modal_has_one_input_per_field_of_the_right_kind() -> None:
    view = forms.answer_modal(triage_task())
    check_view(view)
    assert view["callback_id"] == "task.answer"
    assert view["private_metadata"] == "task_0123456789abcdef"
    assert view["title"]["text"] == "Answer: triage"
    inputs = blocks_by_id(view)
    assert list(inputs) == list(Triage.model_fields)
    kinds = {name: block["element"]["type"] for name, block in inputs.items()}
    assert kinds == {
        "label": "static_select",
        "queue": "static_select",
        "priority": "static_select",
        "urgent": "radio_buttons",
        "escalate": "radio_buttons",
        "count": "number_input",
        "limit": "number_input",
        "score": "number_input",
        "amount": "number_input",
        "note": "plain_text_input",
        "summary": "plain_text_input",
        "title": "plain_text_input",
        "customer": "plain_text_input",
        "address": "plain_text_input",
        "tags": "multi_static_select",
        "due": "datepicker",
        "kind": "static_select",
        "attempts": "number_input",
    }
    for name, block in inputs.items():
        assert block["element"]["action_id"] == name
    optional = {name for name, block in inputs.items() if block["optional"]}
    assert optional == {"priority", "escalate", "note", "tags", "due", "kind", "attempts"}

    assert [o["value"] for o in inputs["label"]["element"]["options"]] == [
        "refund",
        "question",
        "spam",
    ]
    assert [o["value"] for o in inputs["queue"]["element"]["options"]] == ["billing", "shipping"]
    assert [o["value"] for o in inputs["priority"]["element"]["options"]] == ["1", "2"]
    assert inputs["label"]["hint"]["text"] == "Which way the ticket goes"
    assert inputs["label"]["label"]["text"] == "Label"

    count, limit = inputs["count"]["element"], inputs["limit"]["element"]
    assert (count["is_decimal_allowed"], count["min_value"], count["max_value"]) == (
        False,
        "1",
        "10",
    )
    assert (limit["min_value"], limit["max_value"]) == ("1", "99")  # gt/lt on integers
    score, amount = inputs["score"]["element"], inputs["amount"]["element"]
    assert (score["is_decimal_allowed"], score["min_value"], score["max_value"]) == (
        True,
        "0",
        "1",
    )
    assert "min_value" not in amount  # gt on a float: left to the model's validation

    assert inputs["summary"]["element"]["multiline"] is True  # maxLength 500
    assert inputs["summary"]["element"]["max_length"] == 500
    assert inputs["title"]["element"]["multiline"] is False  # maxLength 80
    assert inputs["note"]["element"]["multiline"] is True  # no maxLength, a prose name
    assert inputs["customer"]["element"]["multiline"] is False
    assert inputs["address"]["element"]["multiline"] is True
    assert "JSON" in inputs["address"]["hint"]["text"]


def test_the_models_suggestion_fills_the_form() -> None:
    inputs = blocks_by_id(forms.answer_modal(triage_task()))
    element = {name: block["element"] for name, block in inputs.items()}
    assert element["label"]["initial_option"]["value"] == "refund"
    assert element["queue"]["initial_option"]["value"] == "billing"
    assert element["priority"]["initial_option"]["value"] == "2"
    assert element["urgent"]["initial_option"]["value"] == "true"
    assert element["escalate"]["initial_option"]["value"] == "false"  # the schema default
    assert element["count"]["initial_value"] == "3"
    assert element["score"]["initial_value"] == "0.25"
    assert element["amount"]["initial_value"] == "0.00001"  # never 1e-05
    assert element["summary"]["initial_value"] == "Customer was charged twice."
    assert element["address"]["initial_value"].startswith("{")
    assert [o["value"] for o in element["tags"]["initial_options"]] == ["vip"]
    assert element["due"]["initial_date"] == "2024-06-01"
    assert element["attempts"]["initial_value"] == "3"
    assert "initial_value" not in element["note"]


def test_a_suggestion_that_does_not_fit_is_not_prefilled() -> None:
    bad = {
        "label": "nonsense",
        "count": 11,
        "limit": 2.5,
        "urgent": "yes",
        "title": "t" * 81,
        "due": "tomorrow",
    }
    t = triage_task()
    t = replace(t, context={**t.context, "suggestion": bad})
    view = forms.answer_modal(t)
    check_view(view)
    element = {name: block["element"] for name, block in blocks_by_id(view).items()}
    assert "initial_option" not in element["label"]
    assert "initial_value" not in element["count"]
    assert "initial_value" not in element["limit"]
    assert "initial_option" not in element["urgent"]
    assert "initial_value" not in element["title"]
    assert "initial_date" not in element["due"]


def test_round_trip_state_values_validate_with_the_original_model() -> None:
    answer = forms.answer_from_submission(SCHEMA, FULL_STATE)
    assert answer == {
        "label": "refund",
        "queue": "shipping",
        "priority": 2,
        "urgent": False,
        "count": 4,
        "limit": 99,
        "score": 0.5,
        "amount": 12.75,
        "note": None,
        "summary": "Charged twice\nfor order A-1",
        "title": "Double charge",
        "customer": "ACME <!channel>",
        "address": {"street": "1 Main St", "zip": "12345"},
        "tags": ["vip", "late"],
        "due": "2024-06-01",
        "kind": "ticket",
    }
    validated = Triage.model_validate(answer)
    assert validated.queue is Queue.SHIPPING and validated.priority is Priority.HIGH
    assert (
        validated.escalate is False
        and validated.attempts == 3
        and validated.tags
        == [
            "vip",
            "late",
        ]
    )
    assert isinstance(answer["count"], int) and isinstance(answer["urgent"], bool)


def test_the_prefilled_form_submitted_unchanged_gives_back_the_suggestion() -> None:
    view = forms.answer_modal(triage_task())
    values: dict[str, Any] = {}
    for name, block in blocks_by_id(view).items():
        element = block["element"]
        current: dict[str, Any] = {"type": element["type"]}
        if "initial_option" in element:
            current["selected_option"] = element["initial_option"]
        elif element["type"] in ("static_select", "radio_buttons"):
            current["selected_option"] = None
        if element["type"] == "multi_static_select":
            current["selected_options"] = element.get("initial_options", [])
        if element["type"] in ("plain_text_input", "number_input"):
            current["value"] = element.get("initial_value")
        if element["type"] == "datepicker":
            current["selected_date"] = element.get("initial_date")
        values[name] = {name: current}
    answer = forms.answer_from_submission(SCHEMA, values)
    assert Triage.model_validate(answer) == Triage.model_validate({**SUGGESTION, "note": None})


def test_empty_optional_fields_are_null_or_left_out() -> None:
    values = {
        **FULL_STATE,
        **state(
            priority={"type": "static_select", "selected_option": None},
            tags={"type": "multi_static_select", "selected_options": []},
            due={"type": "datepicker", "selected_date": None},
            kind={"type": "static_select", "selected_option": None},
        ),
    }
    answer = forms.answer_from_submission(SCHEMA, values)
    assert answer["priority"] is None and answer["due"] is None and answer["note"] is None
    for left_out in ("escalate", "attempts", "tags", "kind"):
        assert left_out not in answer
    validated = Triage.model_validate(answer)
    assert (validated.tags, validated.kind, validated.attempts) == ([], "ticket", 3)


def test_validation_errors_map_to_the_fields_blocks() -> None:
    values = {
        **FULL_STATE,
        **state(
            address={"type": "plain_text_input", "value": '{"street": "1 Main St"}'},
            amount={"type": "number_input", "value": "5000"},
            title={"type": "plain_text_input", "value": "t" * 81},
        ),
    }
    answer = forms.answer_from_submission(SCHEMA, values)
    with pytest.raises(ValidationError) as caught:
        Triage.model_validate(answer)
    errors = forms.errors_for_modal(caught.value, SCHEMA)
    assert errors == {
        "address": "zip: Required.",
        "title": "String should have at most 80 characters",
    }
    response = {"response_action": "errors", "errors": errors}
    assert set(response["errors"]) <= set(blocks_by_id(forms.answer_modal(triage_task())))

    # a model-level error (no field) lands on the first field's block
    answer = forms.answer_from_submission(
        SCHEMA, {**FULL_STATE, **state(amount={"type": "number_input", "value": "5000"})}
    )
    with pytest.raises(ValidationError) as caught:
        Triage.model_validate(answer)
    assert forms.errors_for_modal(caught.value, SCHEMA) == {
        "label": "refunds over 1000 need a manager"
    }


def test_text_that_is_not_json_comes_back_as_an_error_on_its_block() -> None:
    values = {**FULL_STATE, **state(address={"type": "plain_text_input", "value": "1 Main St"})}
    answer = forms.answer_from_submission(SCHEMA, values)
    assert answer["address"] == "1 Main St"
    with pytest.raises(ValidationError) as caught:
        Triage.model_validate(answer)
    errors = forms.errors_for_modal(caught.value)
    assert list(errors) == ["address"]
    assert errors["address"].startswith("Not valid JSON here")


def test_modal_from_a_huge_schema_falls_back_to_one_json_input() -> None:
    fields = {f"f{i}": {"type": "integer", "title": f"F{i}"} for i in range(150)}
    schema = {"type": "object", "properties": fields, "required": list(fields)}
    suggestion = {f"f{i}": i for i in range(150)}
    t = triage_task(output_schema=schema)
    t = replace(t, context={**t.context, "suggestion": suggestion})
    view = forms.answer_modal(t)
    check_view(view)
    (block,) = blocks_by_id(view).values()
    assert block["block_id"] == forms.JSON_BLOCK
    values = {forms.JSON_BLOCK: {forms.JSON_BLOCK: {"value": block["element"]["initial_value"]}}}
    assert forms.answer_from_submission(schema, values) == suggestion
    errors = [{"loc": ("f3",), "msg": "Input should be a valid integer", "type": "int_parsing"}]
    assert forms.errors_for_modal(errors, schema) == {
        forms.JSON_BLOCK: "f3: Input should be a valid integer"
    }


def test_long_enums_and_long_option_values_stay_within_limits() -> None:
    long_values = ["v" * 200 + str(i) for i in range(5)]
    many_values = [f"choice-{i}" for i in range(150)]
    schema = {
        "type": "object",
        "properties": {
            "long": {"enum": long_values, "type": "string"},
            "many": {"enum": many_values, "type": "string"},
            "numbers": {"enum": [1, 2.5, None, "x"]},
            "items": {"type": "array", "items": {"enum": long_values}},
            "desc": {"type": "string", "description": "d" * 5000, "title": "T" * 5000},
        },
        "required": ["long", "many", "numbers", "items", "desc"],
    }
    view = forms.answer_modal(triage_task(output_schema=schema, name="n" * 100))
    check_view(view)
    inputs = blocks_by_id(view)
    assert inputs["long"]["element"]["type"] == "static_select"
    assert inputs["many"]["element"]["type"] == "plain_text_input"  # over 100 choices: typed
    values = state(
        long={"type": "static_select", "selected_option": option("3")},
        many={"type": "plain_text_input", "value": "choice-120"},
        numbers={"type": "static_select", "selected_option": option("2.5")},
        items={"type": "multi_static_select", "selected_options": [option("0"), option("4")]},
        desc={"type": "plain_text_input", "value": "ok"},
    )
    assert forms.answer_from_submission(schema, values) == {
        "long": long_values[3],
        "many": "choice-120",
        "numbers": 2.5,
        "items": [long_values[0], long_values[4]],
        "desc": "ok",
    }


def test_hostile_question_and_labels_are_escaped_in_the_modal() -> None:
    schema = {
        "type": "object",
        "properties": {"x": {"type": "string", "title": HOSTILE_TEXT, "description": HOSTILE_TEXT}},
        "required": ["x"],
    }
    view = forms.answer_modal(triage_task(output_schema=schema, question=HOSTILE_TEXT * 300))
    check_view(view)
    check_escaped(view, allowed_users=set())


def test_a_task_without_a_suggestion_or_fields_still_opens_a_valid_modal() -> None:
    t = task(context=None, output_schema={"type": "object", "properties": {}})
    view = forms.answer_modal(t)
    check_view(view)
    assert forms.answer_from_submission(t.output_schema, {}) == {}
    check_view(forms.answer_modal(task(context=None, output_schema=SCHEMA)))


class Refund(BaseModel):
    amount: Decimal = Field(gt=0, description="In the order's currency")
    reasons: list[str]
    tip: Decimal | None = None
    notes: list[str] = []


def test_decimals_keep_their_digits_and_string_lists_are_one_per_line() -> None:
    schema = Refund.model_json_schema()
    t = task(output_schema=schema)
    t = replace(
        t, context={**t.context, "suggestion": {"amount": "12.50", "reasons": ["late", "broken"]}}
    )
    view = forms.answer_modal(t)
    check_view(view)
    inputs = blocks_by_id(view)
    amount, reasons = inputs["amount"]["element"], inputs["reasons"]["element"]
    assert (amount["type"], amount["is_decimal_allowed"], amount["initial_value"]) == (
        "number_input",
        True,
        "12.50",
    )
    assert (reasons["type"], reasons["multiline"], reasons["initial_value"]) == (
        "plain_text_input",
        True,
        "late\nbroken",
    )
    assert inputs["reasons"]["hint"]["text"] == "One per line."
    assert inputs["reasons"]["optional"] is True  # an empty list is a valid answer
    values = state(
        amount={"type": "number_input", "value": "0.10"},
        reasons={"type": "plain_text_input", "value": "late\n\n  broken  \n"},
        tip={"type": "number_input", "value": None},
        notes={"type": "plain_text_input", "value": None},
    )
    answer = forms.answer_from_submission(schema, values)
    assert answer == {"amount": "0.10", "reasons": ["late", "broken"], "tip": None}
    assert Refund.model_validate(answer).amount == Decimal("0.10")
    empty = {**values, **state(reasons={"type": "plain_text_input", "value": None})}
    assert forms.answer_from_submission(schema, empty)["reasons"] == []
