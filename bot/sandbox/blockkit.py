"""Block Kit validation: every reason real Slack would refuse a message's blocks or a view.

slack_sdk.models parses and validates each block; beside it, Slack's size and shape rules are
checked on the raw JSON, since the models accept shortcuts Slack does not (a bare string where a
text object is required) and miss some limits (header 150, field 2,000). Errors read as Slack's
own, `… [json-pointer:/blocks/0/text]`.
"""

from __future__ import annotations

import copy
from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

MESSAGE_MAX_BLOCKS = 50
VIEW_MAX_BLOCKS = 100
MESSAGE_TEXT_MAX = 40_000
TEXT_OBJECT_MAX = 3_000

# -- Block Kit limits ------------------------------------------------------------------------
# Checked on the raw JSON, beside slack_sdk.models: the models accept shortcuts Slack does not
# (a bare string where a text object is required) and miss some limits (header 150, field 2,000).
# A "kind" is a block or element type, or what an untyped object is by its key ("option", "confirm").

# (kind, key) -> (max chars, plain_text only)
_TEXT_FIELDS: dict[tuple[str, str], tuple[int, bool]] = {
    ("section", "text"): (3000, False),
    ("header", "text"): (150, True),
    ("button", "text"): (75, True),
    ("input", "label"): (2000, True),
    ("input", "hint"): (2000, True),
    ("image", "title"): (2000, True),
    ("option", "text"): (75, False),
    ("option", "description"): (75, False),
    ("option_group", "label"): (75, True),
    ("confirm", "title"): (100, True),
    ("confirm", "text"): (300, False),
    ("confirm", "confirm"): (30, True),
    ("confirm", "deny"): (30, True),
    ("modal", "title"): (24, True),
    ("modal", "submit"): (24, True),
    ("modal", "close"): (24, True),
    ("*", "placeholder"): (150, True),
}
# (kind, key) -> max chars of a plain string
_STRING_FIELDS: dict[tuple[str, str], int] = {
    ("*", "action_id"): 255,
    ("*", "block_id"): 255,
    ("button", "value"): 2000,
    ("button", "url"): 3000,
    ("option", "value"): 150,
    ("option", "url"): 3000,
    ("image", "image_url"): 3000,
    ("image", "alt_text"): 2000,
    ("modal", "private_metadata"): 3000,
    ("home", "private_metadata"): 3000,
    ("modal", "callback_id"): 255,
    ("home", "callback_id"): 255,
    ("modal", "external_id"): 255,
}
# (kind, key) -> max items
_LIST_FIELDS: dict[tuple[str, str], int] = {
    ("section", "fields"): 10,
    ("actions", "elements"): 25,
    ("context", "elements"): 10,
    ("static_select", "options"): 100,
    ("multi_static_select", "options"): 100,
    ("static_select", "option_groups"): 100,
    ("option_group", "options"): 100,
    ("checkboxes", "options"): 10,
    ("radio_buttons", "options"): 10,
    ("overflow", "options"): 5,
}
SECTION_FIELD_MAX = 2000
_KIND_BY_KEY = {
    "confirm": "confirm",
    "options": "option",
    "initial_options": "option",
    "initial_option": "option",
    "option_groups": "option_group",
}


def _at(message: str, pointer: str) -> str:
    return f"{message} [json-pointer:{pointer}]"


def _check_text_object(node: Any, pointer: str, limit: int, plain_only: bool) -> list[str]:
    if not isinstance(node, dict) or node.get("type") not in ("plain_text", "mrkdwn"):
        return [_at("must be a text object (plain_text or mrkdwn)", pointer)]
    if plain_only and node["type"] != "plain_text":
        return [_at("must be plain_text", f"{pointer}/type")]
    text = node.get("text")
    if not isinstance(text, str) or not text:
        return [_at("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > limit:
        return [_at(f"must be less than {limit + 1} characters", f"{pointer}/text")]
    return []


def _walk(node: Any, pointer: str, kind: str | None) -> list[str]:
    """Slack's size and shape rules for one object and everything inside it."""
    if isinstance(node, list):
        return [e for i, item in enumerate(node) for e in _walk(item, f"{pointer}/{i}", kind)]
    if not isinstance(node, dict):
        return []
    if node.get("type") in ("plain_text", "mrkdwn"):
        return _check_text_object(node, pointer, TEXT_OBJECT_MAX, plain_only=False)
    kind = node.get("type") if isinstance(node.get("type"), str) else kind
    errors: list[str] = []
    for key, value in node.items():
        here = f"{pointer}/{key}"
        rule = _TEXT_FIELDS.get((kind or "", key)) or _TEXT_FIELDS.get(("*", key))
        if rule is not None:
            errors += _check_text_object(value, here, *rule)
            continue
        limit = _STRING_FIELDS.get((kind or "", key)) or _STRING_FIELDS.get(("*", key))
        if limit is not None and isinstance(value, str) and len(value) > limit:
            errors.append(_at(f"must be less than {limit + 1} characters", here))
        max_items = _LIST_FIELDS.get((kind or "", key))
        if max_items is not None and isinstance(value, list) and len(value) > max_items:
            errors.append(_at(f"must contain at most {max_items} items", here))
        if (kind, key) == ("section", "fields") and isinstance(value, list):
            for i, item in enumerate(value):
                errors += _check_text_object(item, f"{here}/{i}", SECTION_FIELD_MAX, False)
            continue
        if isinstance(value, (dict, list)):
            errors += _walk(value, here, _KIND_BY_KEY.get(key))
    if kind == "actions" and isinstance(node.get("elements"), list):
        ids = [e.get("action_id") for e in node["elements"] if isinstance(e, dict)]
        if len([i for i in ids if i]) != len({i for i in ids if i}):
            errors.append(_at("action_id must be unique within a block", f"{pointer}/elements"))
    return errors


def check_blocks(
    blocks: Any, pointer: str = "/blocks", max_blocks: int = MESSAGE_MAX_BLOCKS
) -> list[str]:
    """Every reason Slack would refuse these blocks, in Slack's `[json-pointer:…]` style."""
    if not isinstance(blocks, list):
        return [_at("must be an array", pointer)]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(_at(f"must contain at most {max_blocks} blocks", pointer))
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        here = f"{pointer}/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(_at("must be a block object with a type", here))
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                errors.append(_at(f"duplicate block_id {block_id!r}", f"{here}/block_id"))
            seen_ids.add(block_id)
        # slack_sdk's own models: a parse or validator failure of any kind is a refusal here.
        try:
            parsed = Block.parse(copy.deepcopy(block))
            if parsed is None:
                errors.append(_at(f"unsupported block type {block['type']!r}", f"{here}/type"))
                continue
            parsed.to_dict()  # validates the block and everything nested in it
        except Exception as exc:
            errors.append(_at(f"slack_sdk.models: {exc}", here))
        errors += _walk(block, here, None)
    return errors


def check_view(view: Any) -> list[str]:
    """Every reason Slack would refuse this modal or Home tab."""
    if not isinstance(view, dict):
        return [_at("must be a view object", "/view")]
    if view.get("type") not in ("modal", "home"):
        return [_at("type must be 'modal' or 'home'", "/view/type")]
    errors: list[str] = []
    if view["type"] == "modal" and not view.get("title"):
        errors.append(_at("modal needs a title", "/view/title"))
    try:
        View(**copy.deepcopy(view)).validate_json()  # view-level rules; blocks checked below
    except Exception as exc:
        errors.append(_at(f"slack_sdk.models: {exc}", "/view"))
    has_inputs = any(
        isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
    )
    if view["type"] == "modal" and has_inputs and not view.get("submit"):
        errors.append(_at("a modal with input blocks needs a submit button", "/view/submit"))
    errors += check_blocks(view.get("blocks", []), "/view/blocks", VIEW_MAX_BLOCKS)
    errors += _walk({k: v for k, v in view.items() if k != "blocks"}, "/view", view["type"])
    return errors
