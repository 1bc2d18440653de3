"""Human-task forms: a Slack modal generated from the task's output schema, and back again.

`answer_modal` turns the pydantic JSON schema of a task's output into input blocks, one per field
(`block_id` and `action_id` = `field_id(name)`: the field name itself when it is short and plain,
else a readable prefix and a hash of it, since Slack refuses ids over 255 characters):

| schema                                  | element                                   |
|-----------------------------------------|-------------------------------------------|
| `enum` / `const` (Literal, Enum, `$ref`)| `static_select` (≤ 100 choices)           |
| array of such                           | `multi_static_select`                     |
| `boolean`                               | `radio_buttons` Yes / No                  |
| `integer` / `number`                    | `number_input` with the schema's bounds   |
| `string` (`format: date`)               | `datepicker`                              |
| `string`                                | `plain_text_input` (multiline when long)  |
| array of strings                        | multiline `plain_text_input`, one a line  |
| `Decimal` (number or string)            | `number_input`, the digits sent as text   |
| anything else (objects, arrays, unions) | `plain_text_input` taking JSON, with hint |

A `confidence` field is never asked of a person: the engine records a person's answer with no
confidence (`pipelines.tasks.with_person_confidence`). Above the fields the modal repeats the
input being judged (escaped, cut to `INPUT_SHOWN`). Fields not in `required`, or that accept null, are `optional`. The model's suggestion (a task from
`ctx.llm`'s human exit) or the schema default fills the initial values; descriptions become hints.
A schema with more fields than a modal can hold (or that is not an object) gets one JSON input.

`answer_from_submission` reads `view.state.values` back into a JSON object for the same pydantic
model (whatever input element a field's block holds: a picked user, channel, time or rich text is
read as that field's text); `errors_for_modal` turns that model's `ValidationError` into the
`errors` of a `{"response_action": "errors", ...}` reply, keyed by block id.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError

from bot.slack.blocks import MODAL_TITLE_LIMIT, VIEW_BLOCKS, context, plain_text, section
from bot.slack.cards import llm_exit
from bot.slack.mrkdwn import code_block, escape, fmt_value, truncate
from pipelines.sensitive import MASK
from pipelines.tasks import NOT_ASKED_OF_PEOPLE

ANSWER_CALLBACK = "task.answer"
# One JSON input for the whole answer; a leading underscore can't be a pydantic field name.
JSON_BLOCK = "_answer"

MODAL_BLOCKS = VIEW_BLOCKS
LEADING_BLOCKS = 3  # the question, the input being judged, the note about the suggestion
MAX_FIELDS = MODAL_BLOCKS - LEADING_BLOCKS
SELECT_OPTIONS = 100
OPTION_LABEL_LIMIT = 75
OPTION_VALUE_LIMIT = 150
TEXT_INPUT_LIMIT = 3000
LABEL_LIMIT = 2000
HINT_LIMIT = 2000
MULTILINE_OVER = 150
ERROR_LIMIT = 500
INPUT_SHOWN = 1500  # the input being judged, in the modal: enough to judge, one screen at most
# Fields a person is never asked for: how sure a model is is not a person's to say.
NOT_ASKED = NOT_ASKED_OF_PEOPLE

# Names that usually hold prose: a long box even without a maxLength.
_PROSE = re.compile(
    r"(reason|note|comment|description|text|body|message|summary|explanation|detail|draft|"
    r"reply|content|feedback|answer|rationale)",
    re.IGNORECASE,
)
# A field name used as its own block/action id: what Slack surely takes, and short. Anything else
# (a 300-character name, spaces, dots, unicode) gets `field_id`'s hashed form, which always holds a
# "." and so never equals a plain one.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ID_PREFIX = 40
_ID_HASH = 16
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")

Kind = Literal[
    "select", "multi_select", "bool", "integer", "number", "date", "text", "lines", "json"
]
_MISSING: Any = object()


@dataclass(frozen=True)
class FormField:
    """One property of the output schema, as the modal shows it."""

    name: str
    label: str
    kind: Kind
    optional: bool  # may be left empty in the modal
    nullable: bool  # an empty answer is sent as null (else the key is left out)
    description: str | None = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    multiline: bool = False
    exact: bool = False  # a Decimal: the typed digits are sent as a string, never via float
    default: Any = _MISSING


def field_id(name: str) -> str:
    """The `block_id` and `action_id` of a field's input: `name` itself when it is plain ASCII
    and at most 64 characters, else a readable prefix of it, a dot and 16 hex digits of its
    SHA-256 (at most 57 characters, the same in every process, so a submission is read back by
    any replica)."""
    if _PLAIN_ID.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_name).strip("_")[:_ID_PREFIX] or "field"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_ID_HASH]
    return f"{prefix}.{digest}"


# -- reading the schema ------------------------------------------------------------------------


def _deref(root: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with `$ref`s and one-element `allOf`s resolved; the outer keys win."""
    resolved = dict(node)
    for _ in range(20):  # a recursive model refers to itself: stop rather than loop
        if "$ref" in resolved:
            ref = resolved.pop("$ref")
            target: Any = root
            for part in str(ref).removeprefix("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            resolved = {**target, **resolved}
        elif isinstance(resolved.get("allOf"), list) and len(resolved["allOf"]) == 1:
            inner = resolved.pop("allOf")[0]
            resolved = {**inner, **resolved}
        else:
            break
    return resolved


def _non_null(root: Mapping[str, Any], prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property without its null alternative, and whether null was one."""
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            rest = [_deref(root, o) for o in options]
            rest = [o for o in rest if o.get("type") != "null"]
            nullable = len(rest) < len(options)
            if sorted(str(o.get("type")) for o in rest) == ["number", "string"]:
                # pydantic's Decimal: a number, or its digits as a string.
                number = next(o for o in rest if o.get("type") == "number")
                outer = {k: v for k, v in prop.items() if k != key}
                return {**number, **outer, "x-exact": True}, nullable
            if len(rest) == 1:
                outer = {k: v for k, v in prop.items() if k != key}
                return {**rest[0], **outer}, nullable
            return {**prop, key: rest}, nullable
    kind = prop.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest_types = [t for t in kind if t != "null"]
        return {**prop, "type": rest_types[0] if len(rest_types) == 1 else rest_types}, True
    return prop, False


def _choices(prop: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if "const" in prop:
        return (prop["const"],)
    if isinstance(prop.get("enum"), list):
        return tuple(prop["enum"])
    return None


def _bound(prop: Mapping[str, Any], inclusive: str, exclusive: str, step: int) -> float | None:
    """The inclusive bound; an exclusive one only translates for integers (±1)."""
    if isinstance(prop.get(inclusive), int | float):
        return float(prop[inclusive])
    if step and isinstance(prop.get(exclusive), int | float):
        return float(prop[exclusive]) + step
    return None


def form_fields(schema: Any) -> list[FormField] | None:
    """The schema's properties as form fields, or None when the answer must be typed as one JSON
    value (not an object schema, or more fields than a modal can hold)."""
    if not isinstance(schema, Mapping):
        return None
    root = _deref(schema, schema)
    properties = root.get("properties")
    if root.get("type", "object") != "object" or not isinstance(properties, Mapping):
        return None
    if len(properties) > MAX_FIELDS:
        return None
    required = set(root.get("required") or [])
    return [
        _field(schema, str(name), prop, name in required)
        for name, prop in properties.items()
        if name not in NOT_ASKED
    ]


def _field(root: Mapping[str, Any], name: str, raw: Any, required: bool) -> FormField:
    outer = raw if isinstance(raw, Mapping) else {}
    label = str(outer.get("title") or name.replace("_", " ").strip().capitalize() or name)
    prop, nullable = _non_null(root, _deref(root, outer))
    description = outer.get("description") or prop.get("description")
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "optional": not required or nullable,
        "nullable": nullable,
        "description": str(description) if description else None,
        "default": prop.get("default", _MISSING),
    }
    choices = _choices(prop)
    kind = prop.get("type")
    if choices is not None and len(choices) <= SELECT_OPTIONS:
        return FormField(kind="select", choices=choices, **common)
    if kind == "array" and not choices:
        items = _deref(root, prop.get("items") or {})
        item_choices = _choices(items)
        if item_choices is not None and len(item_choices) <= SELECT_OPTIONS:
            # An empty list is a valid answer unless the schema asks for at least one.
            common["optional"] = common["optional"] or not prop.get("minItems")
            return FormField(kind="multi_select", choices=item_choices, **common)
        if items.get("type") == "string" and not items.get("format"):
            common["optional"] = common["optional"] or not prop.get("minItems")
            return FormField(kind="lines", multiline=True, **common)
    if kind == "boolean":
        return FormField(kind="bool", **common)
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0
        return FormField(
            kind=kind,
            exact=bool(prop.get("x-exact")),
            minimum=_bound(prop, "minimum", "exclusiveMinimum", step),
            maximum=_bound(prop, "maximum", "exclusiveMaximum", -step),
            **common,
        )
    if kind == "string" and choices is None:
        if prop.get("format") == "date":
            return FormField(kind="date", **common)
        max_length = prop.get("maxLength")
        min_length = prop.get("minLength")
        max_length = min(int(max_length), TEXT_INPUT_LIMIT) if max_length else None
        min_length = min(int(min_length), max_length or TEXT_INPUT_LIMIT) if min_length else None
        multiline = max_length > MULTILINE_OVER if max_length else bool(_PROSE.search(name))
        return FormField(
            kind="text",
            min_length=min_length,
            max_length=max_length,
            multiline=multiline,
            **common,
        )
    return FormField(kind="json", multiline=True, **common)


# -- building the modal ------------------------------------------------------------------------


def _option_values(choices: Sequence[Any]) -> list[str]:
    """Option values for `choices`: the value itself when it is a short, distinct string (numbers
    and others as JSON), else its position. Decoding recomputes the same list."""
    readable = [c if isinstance(c, str) else json.dumps(c) for c in choices]
    if len(set(readable)) == len(readable) and all(
        0 < len(v) <= OPTION_VALUE_LIMIT for v in readable
    ):
        return readable
    return [str(i) for i in range(len(choices))]


def _options(choices: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"text": plain_text(fmt_value(choice), OPTION_LABEL_LIMIT), "value": value}
        for choice, value in zip(choices, _option_values(choices), strict=True)
    ]


def _number_text(value: Any) -> str:
    """A number as number_input wants it: plain digits, never `1e-05`."""
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _initial_number(item: FormField, initial: Any) -> str | None:
    """A number input's initial text, or None when `initial` does not fit the field."""
    text = None
    if item.exact and isinstance(initial, str) and _DECIMAL.match(initial):
        text, initial = initial, float(initial)
    if not _is_number(initial):
        return None
    if item.kind == "integer" and not float(initial).is_integer():
        return None
    if item.minimum is not None and initial < item.minimum:
        return None
    if item.maximum is not None and initial > item.maximum:
        return None
    return text or _number_text(int(initial) if item.kind == "integer" else initial)


def _element(item: FormField, initial: Any) -> dict[str, Any]:
    """The input element for one field, prefilled with `initial` when it fits."""
    if initial == MASK:  # a sensitive value is never shown, so it is never prefilled either
        initial = _MISSING
    has = initial is not _MISSING and initial is not None
    element: dict[str, Any] = {"action_id": field_id(item.name)}
    if item.kind in ("select", "multi_select"):
        options = _options(item.choices)
        element["type"] = "static_select" if item.kind == "select" else "multi_static_select"
        element["options"] = options
        element["placeholder"] = plain_text("Choose…", 150)
        if has and item.kind == "select" and initial in item.choices:
            element["initial_option"] = options[item.choices.index(initial)]
        elif has and item.kind == "multi_select" and isinstance(initial, list):
            chosen = [options[item.choices.index(v)] for v in initial if v in item.choices]
            if chosen:
                element["initial_options"] = chosen
    elif item.kind == "bool":
        options = [
            {"text": plain_text("Yes"), "value": "true"},
            {"text": plain_text("No"), "value": "false"},
        ]
        element["type"] = "radio_buttons"
        element["options"] = options
        if isinstance(initial, bool):
            element["initial_option"] = options[0 if initial else 1]
    elif item.kind in ("integer", "number"):
        element["type"] = "number_input"
        element["is_decimal_allowed"] = item.kind == "number"
        if item.minimum is not None:
            element["min_value"] = _number_text(
                int(item.minimum) if item.kind == "integer" else item.minimum
            )
        if item.maximum is not None:
            element["max_value"] = _number_text(
                int(item.maximum) if item.kind == "integer" else item.maximum
            )
        initial_text = _initial_number(item, initial)
        if initial_text is not None:
            element["initial_value"] = initial_text
    elif item.kind == "date":
        element["type"] = "datepicker"
        if isinstance(initial, str) and _DATE.match(initial):
            element["initial_date"] = initial
    else:
        element["type"] = "plain_text_input"
        element["multiline"] = item.multiline
        if item.max_length:
            element["max_length"] = item.max_length
        if item.min_length:
            element["min_length"] = item.min_length
        if item.kind == "json":
            element["placeholder"] = plain_text("JSON", 150)
            text = json.dumps(initial, ensure_ascii=False, indent=2) if has else None
        elif item.kind == "lines":
            lines = initial if isinstance(initial, list) else []
            fits = all(isinstance(line, str) and "\n" not in line for line in lines)
            text = "\n".join(lines) if lines and fits else None
        else:
            text = initial if isinstance(initial, str) else None
        limit = item.max_length or TEXT_INPUT_LIMIT
        if text and len(text) <= limit:
            element["initial_value"] = text
    return element


def _hint(item: FormField) -> str | None:
    parts = [item.description] if item.description else []
    if item.kind == "json":
        parts.append('Type JSON, e.g. {"key": "value"}, [1, 2] or "text".')
    elif item.kind == "lines":
        parts.append("One per line.")
    text = " ".join(" ".join(parts).split())
    return truncate(text, HINT_LIMIT) if text else None


def _input_block(item: FormField, initial: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": field_id(item.name),
        "label": plain_text(item.label, LABEL_LIMIT),
        "element": _element(item, initial),
        "optional": item.optional,
    }
    hint = _hint(item)
    if hint:
        block["hint"] = plain_text(hint, HINT_LIMIT)
    return block


def _json_block(suggestion: Any) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": JSON_BLOCK,
        "multiline": True,
        "placeholder": plain_text("JSON", 150),
    }
    if isinstance(suggestion, Mapping):
        suggestion = {k: v for k, v in suggestion.items() if k not in NOT_ASKED}
    if suggestion is not None:
        text = json.dumps(suggestion, ensure_ascii=False, indent=2)
        if len(text) <= TEXT_INPUT_LIMIT:
            element["initial_value"] = text
    return {
        "type": "input",
        "block_id": JSON_BLOCK,
        "label": plain_text("Answer (JSON)", LABEL_LIMIT),
        "element": element,
        "hint": plain_text("The whole answer as one JSON object, as the task's schema asks."),
    }


def suggestion_of(task: Any) -> Any:
    """The model's suggested answer when the task came from `ctx.llm`'s human exit."""
    exit_context = llm_exit(getattr(task, "context", None))
    return exit_context.get("suggestion") if exit_context else None


def judged_input(task: Any) -> dict[str, Any] | None:
    """The input the person is judging, repeated in the form: a model call's prompt (its human
    exit), or what `ctx.ask_human` gave as context; escaped, cut to `INPUT_SHOWN`."""
    exit_context = llm_exit(getattr(task, "context", None))
    if exit_context is not None:
        value, title = exit_context.get("input"), "Input"
    else:
        value, title = getattr(task, "context", None), "Context"
    if value in (None, "", {}, []):
        return None
    more = (
        f"the whole input: /gatehouse run {task.run_id}" if getattr(task, "run_id", None) else None
    )
    return section(f"*{title}*\n{code_block(value, INPUT_SHOWN, escape(more) if more else None)}")


def answer_modal(task: Any) -> dict[str, Any]:
    """The modal the Answer button opens (`callback_id` `task.answer`, `private_metadata` = task
    id), one input per field of `task.output_schema`, prefilled from the model's suggestion."""
    suggestion = suggestion_of(task)
    blocks: list[dict[str, Any]] = [
        section(escape(truncate(str(task.question or task.name), 2900)))
    ]
    judged = judged_input(task)
    if judged is not None:
        blocks.append(judged)
    fields = form_fields(task.output_schema)
    if suggestion is not None:
        blocks.append(context("The model's suggestion is filled in: check it before you submit."))
    if fields is None:
        blocks.append(_json_block(suggestion))
    else:
        values = suggestion if isinstance(suggestion, Mapping) else {}
        for item in fields:
            initial = values.get(item.name, item.default)
            blocks.append(_input_block(item, initial))
    return {
        "type": "modal",
        "callback_id": ANSWER_CALLBACK,
        "private_metadata": str(task.id),
        "title": plain_text(f"Answer: {task.name}", MODAL_TITLE_LIMIT),
        "submit": plain_text("Submit", MODAL_TITLE_LIMIT),
        "close": plain_text("Cancel", MODAL_TITLE_LIMIT),
        "blocks": blocks,
    }


def input_blocks(schema: Any, values: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """One input block per field of `schema`, prefilled from `values` (else the schema's
    default); None when the schema is not a form of fields (`form_fields`). The Edit & approve
    form (bot/slack/edit_approval.py) is built with it."""
    fields = form_fields(schema)
    if fields is None:
        return None
    return [_input_block(item, values.get(item.name, item.default)) for item in fields]


# -- reading the submission --------------------------------------------------------------------


def _state(state_values: Mapping[str, Any], block_id: str) -> Mapping[str, Any] | None:
    """The one element's state in `block_id` (found by action id, or the block's only one)."""
    block = state_values.get(block_id)
    if not isinstance(block, Mapping) or not block:
        return None
    value = block.get(block_id, next(iter(block.values())))
    return value if isinstance(value, Mapping) else None


def _json_or_text(text: str) -> Any:
    """JSON when it parses; else the text itself, for the model's validation to judge."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(text: str, integer: bool) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    if integer:
        return int(number) if number.is_integer() else number
    return number


def _decode(choices: Sequence[Any], value: Any) -> Any:
    values = _option_values(choices)
    return choices[values.index(value)] if value in values else value


# What the input elements the form does not render put in their state, for a field read as text
# (or a number, or lines): Slack's `state.values` shape for each, so a form edited by hand or a
# later element choice still reads back.
_SELECTED_ONE = ("selected_user", "selected_conversation", "selected_channel", "selected_time")
_SELECTED_MANY = ("selected_users", "selected_conversations", "selected_channels")


def _rich_text(node: Any) -> str:
    """A rich_text_input's value as plain mrkdwn-ish text: text, links, mentions, emoji; list
    items and top-level sections on lines of their own."""
    if not isinstance(node, Mapping):
        return ""
    kind = node.get("type")
    if kind in ("text", "link"):
        return str(node.get("text") or node.get("url") or "")
    mention = {"user": ("<@", "user_id"), "channel": ("<#", "channel_id")}.get(str(kind))
    if mention is not None:
        return f"{mention[0]}{node.get(mention[1], '')}>"
    if kind == "emoji":
        return f":{node.get('name', '')}:"
    parts = [_rich_text(child) for child in node.get("elements") or []]
    joiner = "\n" if kind in ("rich_text", "rich_text_list") else ""
    return joiner.join(parts)


def _other_input_text(state: Mapping[str, Any]) -> str | None:
    for key in _SELECTED_ONE:
        if isinstance(state.get(key), str):
            return str(state[key])
    for key in _SELECTED_MANY:
        if isinstance(state.get(key), list):
            return "\n".join(str(v) for v in state[key])
    if isinstance(state.get("selected_date_time"), int | float):
        return str(state["selected_date_time"])
    if isinstance(state.get("rich_text_value"), Mapping):
        return _rich_text(state["rich_text_value"])
    return None


def _read(item: FormField, state: Mapping[str, Any]) -> Any:
    """The field's value from its element state; `_MISSING` when left empty."""
    if item.kind in ("select", "bool"):
        option = state.get("selected_option")
        if not isinstance(option, Mapping):
            return _MISSING
        if item.kind == "bool":
            return option.get("value") == "true"
        return _decode(item.choices, option.get("value"))
    if item.kind == "multi_select":
        options = state.get("selected_options") or []
        return [_decode(item.choices, o.get("value")) for o in options if isinstance(o, Mapping)]
    if item.kind == "date":
        return state.get("selected_date") or _MISSING
    text = state.get("value")
    if text is None:
        text = _other_input_text(state)
    if not isinstance(text, str) or (item.kind != "text" and not text.strip()):
        return _MISSING
    if item.kind == "text":
        return text if text else _MISSING
    if item.kind in ("integer", "number"):
        number = _number(text.strip(), item.kind == "integer")
        return text.strip() if item.exact and _is_number(number) else number
    if item.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    return _json_or_text(text)


def answer_from_submission(schema: Any, state_values: Mapping[str, Any]) -> Any:
    """`view.state.values` of an `answer_modal` as the JSON its output model validates: numbers as
    numbers, booleans as booleans; an empty optional field is null when the schema accepts null,
    else left out (the model's default applies). Malformed JSON or numbers are passed through as
    text so that the model's validation names the field."""
    fields = form_fields(schema)
    if fields is None:
        state = _state(state_values, JSON_BLOCK)
        text = state.get("value") if state else None
        return _json_or_text(text) if isinstance(text, str) else {}
    answer: dict[str, Any] = {}
    for item in fields:
        state = _state(state_values, field_id(item.name))
        value = _read(item, state) if state is not None else _MISSING
        if item.kind in ("multi_select", "lines") and (value is _MISSING or value == []):
            # Nothing chosen: the default when there is one, else an empty list (or null).
            no_default = item.default is _MISSING and not item.nullable
            value = [] if no_default else _MISSING
        if value is _MISSING:
            if item.nullable:
                answer[item.name] = None
            continue
        answer[item.name] = value
    return answer


# -- validation errors back into the modal -----------------------------------------------------

_FRIENDLY = {
    "missing": "Required.",
    "json_invalid": "Not valid JSON.",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in _FRIENDLY:
        return _FRIENDLY[kind]
    message = str(error.get("msg", "invalid"))
    if kind in ("dict_type", "list_type", "model_type", "model_attributes_type") and isinstance(
        error.get("input"), str
    ):
        message = f"Not valid JSON here ({message[0].lower()}{message[1:]})."
    return message.removeprefix("Value error, ")


def errors_for_modal(
    validation_errors: ValidationError | Sequence[Mapping[str, Any]], schema: Any = None
) -> dict[str, str]:
    """`{block_id: message}` for `{"response_action": "errors", "errors": ...}`. Field errors go
    to the field's block (nested ones say where inside it); errors about the whole answer go to
    the first field. Pass the task's `schema` so that they land on blocks the modal has."""
    errors = (
        validation_errors.errors(include_url=False)
        if isinstance(validation_errors, ValidationError)
        else list(validation_errors)
    )
    fields = form_fields(schema) if schema is not None else None
    names = [f.name for f in fields] if fields is not None else None
    # A field's errors go to its block, whose id is `field_id` of its name.
    block_of = field_id if names is not None else str
    single_json = schema is not None and fields is None
    collected: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        message = _message(error)
        if single_json:
            block = JSON_BLOCK
            message = f"{'.'.join(loc)}: {message}" if loc else message
        elif loc and (names is None or loc[0] in names):
            block = block_of(loc[0])
            if len(loc) > 1:
                message = f"{'.'.join(loc[1:])}: {message}"
        else:
            block = field_id(names[0]) if names else (loc[0] if loc else JSON_BLOCK)
            message = f"{'.'.join(loc)}: {message}" if loc else message
        collected.setdefault(block, []).append(message)
    return {
        block: truncate("; ".join(messages), ERROR_LIMIT) for block, messages in collected.items()
    }
