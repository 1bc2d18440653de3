"""The Block Kit toolkit: every block is spelled in `bot.slack.blocks` and keeps to Slack's
limits whatever it is given; the card builders, App Home, `/gatehouse` and the review use it."""

from __future__ import annotations

import ast
from pathlib import Path

from bot.slack.blocks import (
    DIVIDER,
    actions,
    button,
    context,
    field_sections,
    header,
    mrkdwn_text,
    plain_text,
    section,
)

SLACK = Path(__file__).resolve().parent.parent / "bot" / "slack"


def test_texts_are_cut_to_slacks_limits_and_never_empty() -> None:
    assert section("*hi*") == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*hi*", "verbatim": True},
    }
    assert mrkdwn_text("")["text"] == " "
    assert len(mrkdwn_text("x" * 5000)["text"]) == 3000
    assert plain_text("   ") == {"type": "plain_text", "text": "-", "emoji": True}
    assert len(header("h" * 400)["text"]["text"]) == 150
    assert DIVIDER == {"type": "divider"}


def test_context_leaves_out_empty_lines_and_keeps_at_most_ten() -> None:
    assert [e["text"] for e in context("a", "", "b")["elements"]] == ["a", "b"]
    assert len(context(*[str(n) for n in range(15)])["elements"]) == 10


def test_a_button_in_an_actions_block_carries_its_ids_and_extras() -> None:
    confirm = {"title": plain_text("Sure?")}
    block = actions("approval.apr_1", button("Go", "approval.approve", "v" * 3000, confirm=confirm))
    assert block["type"] == "actions" and block["block_id"] == "approval.apr_1"
    (element,) = block["elements"]
    assert element["action_id"] == "approval.approve" and len(element["value"]) == 2000
    assert element["confirm"] == confirm and "style" not in element
    assert button("No", "x", "1", style="danger")["style"] == "danger"


def test_fields_go_ten_to_a_section_and_say_when_something_was_cut() -> None:
    blocks, shortened = field_sections({f"k{n}": n for n in range(15)}, title="*Arguments*")
    assert [len(b["fields"]) for b in blocks] == [10, 5] and not shortened
    assert blocks[0]["text"]["text"] == "*Arguments*" and "text" not in blocks[1]
    _, shortened = field_sections({"long": "x" * 1000})
    assert shortened
    _, shortened = field_sections({f"k{n}": n for n in range(25)})
    assert shortened
    assert field_sections({}, title="*Nothing*") == ([section("*Nothing*")], False)


PRIMITIVES = {"mrkdwn", "mrkdwn_text", "plain_text", "section", "context", "header", "button"}
PRIMITIVES |= {"actions", "divider", "field_sections"}


def test_no_builder_defines_its_own_block_primitives() -> None:
    """Two toolkits (with two `context()` signatures) is what this module replaced."""
    found = []
    for path in SLACK.glob("*.py"):
        if path.name == "blocks.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in PRIMITIVES:
                found.append(f"{path.name}: {node.name}")
    assert found == []
