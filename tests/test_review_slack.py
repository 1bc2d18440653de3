"""The weekly review through Slack, end to end: the thread posted on the fake Slack, resumed
after a crash or an error without a duplicate, 429s waited out, Looks right and the Flag modal
clicked as Slack sends them, progress on the parent, and the summary."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from bot.slack import review as slack_review
from bot.slack.review_cards import FLAG_ACTION, FLAG_CALLBACK, LOOKS_RIGHT_ACTION
from pipelines.operations import review
from pipelines.operations.review import ReviewWeekView
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import (
    SIGNING_SECRET,
    SlackWorld,
    card_texts,
    in_both_modes,
    requested_mode,
    slack_world,
)
from tests.test_review import add_llm_call, gh, seed_runs

REVIEW = "C_REVIEW"
SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}


@pytest.fixture
def world(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> Iterator[SlackWorld]:
    """HTTP mode; a test marked `in_both_modes` runs once per `slack_mode` (HTTP, Socket Mode)."""
    mode = requested_mode(request)
    with slack_world(
        fake_slack, sqlite_url, clock, mode=mode, review_channel=REVIEW, review_size=5
    ) as built:
        yield built


def _post(world: SlackWorld, **options: Any) -> ReviewWeekView:
    return slack_review.post_weekly_review(world.bot, pace_seconds=0, **options)


def _thread(world: SlackWorld, week: ReviewWeekView) -> list[dict[str, Any]]:
    assert week.parent_ts is not None
    return world.fake.messages(REVIEW, week.parent_ts)


def _replies(world: SlackWorld, week: ReviewWeekView) -> list[dict[str, Any]]:
    return [m for m in _thread(world, week) if m["ts"] != week.parent_ts]


def _seed(world: SlackWorld, count: int = 8) -> list[str]:
    ids = seed_runs(world.gatehouse.db, count, rng=random.Random(7))
    add_llm_call(world.gatehouse.db, ids[0], confidence=0.62, cost=0.0031)
    return ids


class Crash(BaseException):
    """The process dying between two posts: nothing below it catches it, and its claim on the
    delivery stays held until the lease runs out (another process would see it end at once
    when the holder's pid is gone; this one is still alive)."""


def after_the_dead_senders_lease(world: SlackWorld) -> None:
    world.clock.advance(timedelta(minutes=1))


# -- posting -----------------------------------------------------------------------------------


def test_the_review_posts_a_parent_and_one_threaded_reply_per_run(world: SlackWorld) -> None:
    _seed(world)
    # A real run with a tool call, finished a minute before the review.
    run = world.gatehouse.trigger("refund_request", SMALL, user="U_CAROL")
    assert run.status == "succeeded"
    world.clock.advance(timedelta(minutes=1))

    week = _post(world)

    assert (week.status, week.total, week.channel) == ("posted", 5, REVIEW)
    parent, *replies = _thread(world, week)
    assert parent["text"] == "Weekly review: 5 runs, week of 2 Nov 2026 — 0/5 reviewed, 0 flagged"
    assert "0/5 reviewed, 0 flagged" in card_texts(parent["blocks"])
    assert len(replies) == 5 == len({i.reply_ts for i in week.items})
    for item, reply in zip(week.items, replies, strict=True):
        assert reply["ts"] == item.reply_ts and reply["thread_ts"] == week.parent_ts
        shown = card_texts(reply["blocks"])
        assert f"/gatehouse run {item.run_id}" in shown
        assert f"{item.position}/5" in shown and "*Input*" in shown and "*Output*" in shown
        buttons = [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert [b["action_id"] for b in buttons] == [LOOKS_RIGHT_ACTION, FLAG_ACTION]
    assert world.fake.rejected == []


def test_a_reply_shows_the_models_confidence_the_tools_and_the_cost(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    [scored] = seed_runs(world.gatehouse.db, 1, input={"body": "<!channel> refund *now*"})
    add_llm_call(world.gatehouse.db, scored, confidence=0.62, cost=0.0031)
    run = world.gatehouse.trigger("refund_request", SMALL, user="U_CAROL")
    world.clock.advance(timedelta(minutes=1))

    week = _post(world)

    by_run = {i.run_id: r for i, r in zip(week.items, _replies(world, week), strict=True)}
    shown = card_texts(by_run[scored]["blocks"])
    assert "classify 0.62" in shown and "$0.0031" in shown
    assert "&lt;!channel&gt; refund *now*" in shown and "<!channel>" not in shown
    tools = card_texts(by_run[run.id]["blocks"])
    assert "issue_refund — succeeded" in tools and "no model calls" in tools


def test_posting_again_posts_nothing_new_and_the_pick_stays_the_same(world: SlackWorld) -> None:
    _seed(world)
    first = _post(world)
    posted = len(world.fake.calls_to("chat.postMessage"))
    again = _post(world)
    world.clock.advance(timedelta(days=2))  # Wednesday: still the same week
    later = _post(world)
    assert len(world.fake.calls_to("chat.postMessage")) == posted == 6
    assert [i.run_id for i in later.items] == [i.run_id for i in first.items]
    assert again.parent_ts == later.parent_ts == first.parent_ts


def test_a_crash_in_the_middle_of_posting_resumes_without_a_duplicate(world: SlackWorld) -> None:
    _seed(world)
    pauses: list[float] = []

    def dies_on_the_fourth_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 4:
            raise Crash

    with pytest.raises(Crash):
        slack_review.post_weekly_review(world.bot, pace_seconds=5, sleep=dies_on_the_fourth_pause)
    assert len(world.fake.calls_to("chat.postMessage")) == 4  # the parent and three replies
    stored = review.find_week(world.gatehouse.rt, world.clock.now().replace(hour=0))
    assert stored is not None and stored.status == "posting"
    assert [i.reply_ts is not None for i in stored.items] == [True, True, True, False, False]
    assert _post(world).status == "posting"  # the dead sender still holds the delivery

    after_the_dead_senders_lease(world)
    week = _post(world)  # the retry (a restart, or `gatehouse review post`)

    assert week.status == "posted"
    assert len(world.fake.calls_to("chat.postMessage")) == 6
    assert len(_replies(world, week)) == 5
    assert [i.position for i in week.items] == [1, 2, 3, 4, 5]
    assert all(0 < p <= 5 for p in pauses)  # paced between posts
    assert world.fake.rejected == []


def test_resume_review_finishes_an_interrupted_post_and_never_starts_one(
    world: SlackWorld,
) -> None:
    _seed(world)
    assert slack_review.resume_review(world.bot) is None  # nothing started this week
    assert world.fake.calls_to("chat.postMessage") == []

    def crash(seconds: float) -> None:
        raise Crash

    with pytest.raises(Crash):
        slack_review.post_weekly_review(world.bot, pace_seconds=5, sleep=crash)
    after_the_dead_senders_lease(world)
    resumed = slack_review.resume_review(world.bot)
    assert resumed is not None and resumed.status == "posted"
    assert len(_replies(world, resumed)) == 5
    assert slack_review.resume_review(world.bot) is None


def test_a_slack_error_stops_the_posting_and_the_next_try_carries_on(world: SlackWorld) -> None:
    _seed(world)
    pauses: list[float] = []

    def fail_the_third_reply(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            world.fake.fail_next("chat.postMessage", "internal_error")

    with pytest.raises(slack_review.ReviewPostFailed, match="reply 3/5: internal_error"):
        slack_review.post_weekly_review(world.bot, pace_seconds=5, sleep=fail_the_third_reply)
    week = _post(world)
    assert len(_replies(world, week)) == 5
    assert len({m["text"] for m in _replies(world, week)}) == 5


def test_429s_are_waited_out_and_each_message_is_posted_once(world: SlackWorld) -> None:
    """The bot's Web API client retries a 429 itself (tests/test_slack_bot.py); when it gives
    up, the review waits for Retry-After and tries again. Here the client's own retries are
    off, so every 429 reaches the review (and nothing really sleeps)."""
    _seed(world)
    world.bot.client.retry_handlers.clear()
    for _ in range(slack_review.RATE_LIMIT_RETRIES + 1):
        world.fake.rate_limit_next("chat.postMessage", retry_after=0)
    waited: list[float] = []
    with pytest.raises(slack_review.ReviewPostFailed, match="parent message: ratelimited"):
        slack_review.post_weekly_review(world.bot, pace_seconds=0, sleep=waited.append)
    assert world.fake.messages(REVIEW) == []

    world.fake.rate_limit_next("chat.postMessage", retry_after=0)
    world.fake.rate_limit_next("chat.postMessage", retry_after=2)
    week = slack_review.post_weekly_review(world.bot, pace_seconds=0, sleep=waited.append)
    assert len(_thread(world, week)) == 6
    assert len(world.fake.calls_to("chat.postMessage")) == 4 + 6 + 2
    assert waited == [0.0, 0.0, 0.0, 0.0, 2.0]


def test_an_empty_week_says_so_and_has_nothing_to_review(world: SlackWorld) -> None:
    week = _post(world)
    [parent] = world.fake.messages(REVIEW)
    assert "nothing to review" in card_texts(parent["blocks"])
    assert (week.total, week.status) == (0, "summarized")
    assert world.fake.rejected == []


def test_posting_needs_a_review_channel(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with (
        slack_world(fake_slack, sqlite_url, clock) as world,
        pytest.raises(review.ConfigurationError, match="GATEHOUSE_REVIEW_CHANNEL"),
    ):
        _post(world)


def test_gatehouse_review_post_posts_the_thread_once(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI on the same database and fake Slack (its own clock: the real one)."""
    now = datetime.now(UTC)
    seed_runs(world.gatehouse.db, 3, now=now)
    monkeypatch.chdir(tmp_path)
    environment = {
        "GATEHOUSE_DATABASE_URL": world.gatehouse.db.url,
        "SLACK_BOT_TOKEN": world.fake.token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": world.fake.api_url,
        "GATEHOUSE_APPROVALS_CHANNEL": "C_APPROVALS",
        "GATEHOUSE_REVIEW_CHANNEL": "#review",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    saved = structlog.get_config()
    try:
        first = gh("review", "post", "--pace", "0", "--json")
        again = gh("review", "post", "--pace", "0")
    finally:
        structlog.configure(**saved)
    assert first.exit_code == 0, first.stderr
    week = json.loads(first.stdout)
    assert (week["channel"], week["total"], week["status"]) == (REVIEW, 3, "posted")
    assert again.exit_code == 0 and f"3 runs in {REVIEW}" in again.stdout
    assert len(world.fake.calls_to("chat.postMessage")) == 4
    assert world.fake.rejected == []


# -- verdicts ----------------------------------------------------------------------------------


@in_both_modes
def test_looks_right_records_the_verdict_and_updates_the_reply_and_the_progress(
    world: SlackWorld,
) -> None:
    _seed(world)
    week = _post(world)
    first, second = _replies(world, week)[:2]

    response = world.slack.block_action(LOOKS_RIGHT_ACTION, message=first["ts"], user_id="U_BOB")
    assert response.status == 200
    world.settle()

    item = review.get_item(world.gatehouse.rt, week.items[0].id)
    assert (item.verdict, item.reviewer) == ("looks_right", "U_BOB")
    assert "✅ Looks right — <@U_BOB>" in card_texts(world.card(first["ts"])["blocks"])
    parent = world.card(str(week.parent_ts))
    assert "1/5 reviewed, 0 flagged" in card_texts(parent["blocks"])
    assert parent["text"].endswith("1/5 reviewed, 0 flagged")

    # A second "looks right" is told who reviewed it; nothing changes.
    world.slack.block_action(LOOKS_RIGHT_ACTION, message=first["ts"], user_id="U_ALICE")
    world.settle()
    [told] = world.fake.ephemerals("U_ALICE")
    assert "already marked looks right by U_BOB" in told["text"]
    assert review.get_week(world.gatehouse.rt, week.id).reviewed == 1
    assert second["ts"] != first["ts"]
    assert world.fake.rejected == []


def _open_flag_modal(world: SlackWorld, reply_ts: str, user: str) -> dict[str, Any]:
    world.slack.block_action(FLAG_ACTION, message=reply_ts, user_id=user)
    world.settle()
    modal = world.fake.views[-1]
    assert modal["callback_id"] == FLAG_CALLBACK
    return modal


@in_both_modes
def test_flag_opens_a_modal_that_needs_a_category_and_records_the_flag(world: SlackWorld) -> None:
    _seed(world)
    week = _post(world)
    reply = _replies(world, week)[1]
    modal = _open_flag_modal(world, reply["ts"], "U_ALICE")
    assert week.items[1].run_id in card_texts(modal["blocks"])

    missing = world.slack.view_submission(
        FLAG_CALLBACK, {"category": {"category": None}}, user_id="U_ALICE", view_id=modal["id"]
    )
    assert missing.json["response_action"] == "errors"
    assert set(missing.json["errors"]) == {"category"}
    bad_json = world.slack.view_submission(
        FLAG_CALLBACK,
        {"category": {"category": "wrong_output"}, "expected": {"expected": "{route: refunded"}},
        user_id="U_ALICE",
        view_id=modal["id"],
    )
    assert set(bad_json.json["errors"]) == {"expected"}
    assert world.fake.is_open(modal["id"])

    done = world.slack.view_submission(
        FLAG_CALLBACK,
        {
            "category": {"category": "hallucination"},
            "note": {"note": "it invented an order <@U_BOB>"},
            "expected": {"expected": '{"route": "queue"}'},
        },
        user_id="U_ALICE",
        view_id=modal["id"],
    )
    assert done.status == 200 and not done.text
    world.settle()
    assert not world.fake.is_open(modal["id"])

    item = review.get_item(world.gatehouse.rt, week.items[1].id)
    assert (item.verdict, item.category, item.reviewer) == ("flagged", "hallucination", "U_ALICE")
    assert (item.note, item.expected) == ("it invented an order <@U_BOB>", {"route": "queue"})
    shown = card_texts(world.card(reply["ts"])["blocks"])
    assert (
        "🚩 Flagged by <@U_ALICE>: *Hallucination* — it invented an order &lt;@U_BOB&gt;" in shown
    )
    assert "1/5 reviewed, 1 flagged" in card_texts(world.card(str(week.parent_ts))["blocks"])
    assert world.fake.rejected == []


@in_both_modes
def test_a_flag_overrides_an_earlier_looks_right(world: SlackWorld) -> None:
    _seed(world)
    week = _post(world)
    reply = _replies(world, week)[0]
    world.slack.block_action(LOOKS_RIGHT_ACTION, message=reply["ts"], user_id="U_BOB")
    world.settle()
    modal = _open_flag_modal(world, reply["ts"], "U_ALICE")
    world.slack.view_submission(
        FLAG_CALLBACK, {"category": {"category": "policy"}}, user_id="U_ALICE", view_id=modal["id"]
    )
    world.settle()
    after = review.get_week(world.gatehouse.rt, week.id)
    assert (after.reviewed, after.flagged) == (1, 1)
    shown = card_texts(world.card(reply["ts"])["blocks"])
    assert "🚩 Flagged by <@U_ALICE>: *Policy*" in shown and "✅" not in shown


# -- summaries ---------------------------------------------------------------------------------


def _review_all(world: SlackWorld, week: ReviewWeekView, flags: int) -> None:
    for number, reply in enumerate(_replies(world, week)):
        if number < flags:
            modal = _open_flag_modal(world, reply["ts"], "U_ALICE")
            world.slack.view_submission(
                FLAG_CALLBACK,
                {"category": {"category": "wrong_output"}, "note": {"note": f"bad {number}"}},
                user_id="U_ALICE",
                view_id=modal["id"],
            )
        else:
            world.slack.block_action(LOOKS_RIGHT_ACTION, message=reply["ts"], user_id="U_BOB")
        world.settle()


def test_when_every_run_is_reviewed_the_summary_is_posted_once_against_earlier_weeks(
    world: SlackWorld,
) -> None:
    # Last week: 5 reviewed, 1 flagged (20%).
    seed_runs(world.gatehouse.db, 8, now=world.clock.now() - timedelta(days=7))
    world.clock.advance(timedelta(days=-7))
    last = _post(world)
    _review_all(world, last, flags=1)
    world.clock.advance(timedelta(days=7))

    _seed(world)
    week = _post(world)  # also closes last week (already summarized: nothing more)
    _review_all(world, week, flags=2)
    # One more click after the summary: the summary is updated, not posted again.
    world.slack.block_action(
        LOOKS_RIGHT_ACTION, message=_replies(world, week)[0]["ts"], user_id="U_CAROL"
    )
    world.settle()

    thread = _thread(world, week)
    summaries = [m for m in thread if m["text"].startswith("Weekly review summary")]
    assert len(summaries) == 1
    [summary] = summaries
    assert summary["ts"] == review.get_week(world.gatehouse.rt, week.id).summary_ts
    shown = card_texts(summary["blocks"])
    assert "All runs reviewed: 5/5 reviewed, *2 flagged* (40% of those reviewed)" in shown
    assert "week of 26 Oct 2026: 1 of 5 (20%)" in shown
    assert "This week is up 20 points on the 1 weeks before (20%)" in shown
    assert "bad 0" in shown and "wrong output 2" in shown
    assert "summary in the thread" in card_texts(world.card(str(week.parent_ts))["blocks"])
    assert len(world.fake.calls_to("chat.postMessage")) == 2 * 6 + 2
    assert world.fake.rejected == []


def test_at_the_end_of_the_week_a_partly_reviewed_review_is_summarized(world: SlackWorld) -> None:
    _seed(world)
    week = _post(world)
    world.slack.block_action(
        LOOKS_RIGHT_ACTION, message=_replies(world, week)[0]["ts"], user_id="U_BOB"
    )
    world.settle()
    assert slack_review.summarize_due_reviews(world.bot) == []  # the week is not over

    world.clock.advance(timedelta(days=6, hours=14, minutes=59))  # Sunday 23:59
    assert slack_review.summarize_due_reviews(world.bot) == []
    world.clock.advance(timedelta(minutes=2))  # Monday 00:01: a new week
    [done] = slack_review.summarize_due_reviews(world.bot)
    assert slack_review.summarize_due_reviews(world.bot) == []
    assert (done.id, done.status) == (week.id, "summarized")
    [summary] = [m for m in _thread(world, week) if m["text"].startswith("Weekly review summary")]
    shown = card_texts(summary["blocks"])
    assert "The week is over: 1/5 reviewed, *0 flagged* (0% of those reviewed)" in shown
    assert "No earlier reviews to compare with yet." in shown
    assert world.fake.rejected == []


def test_a_summary_slack_refuses_is_tried_again_by_the_next_check(world: SlackWorld) -> None:
    _seed(world)
    week = _post(world)
    world.clock.advance(timedelta(days=7))
    world.fake.fail_next("chat.postMessage", "channel_not_found")
    assert slack_review.summarize_due_reviews(world.bot) == []
    assert review.get_week(world.gatehouse.rt, week.id).status == "posted"
    [done] = slack_review.summarize_due_reviews(world.bot)
    assert done.summary_ts is not None


def test_a_reply_posted_by_a_sender_that_died_before_recording_it_is_found_not_reposted(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between Slack's answer and the commit of its ts: the sender that takes the
    delivery over finds the reply in the thread by its metadata and records it."""
    _seed(world)
    record = review.record_reply
    recorded: list[int] = []

    def dies_before_the_third_commit(rt: Any, item_id: int, reply_ts: str) -> bool:
        if len(recorded) == 2:
            raise Crash
        recorded.append(item_id)
        return record(rt, item_id, reply_ts)

    monkeypatch.setattr(review, "record_reply", dies_before_the_third_commit)
    with pytest.raises(Crash):
        _post(world)
    monkeypatch.setattr(review, "record_reply", record)
    assert len(world.fake.calls_to("chat.postMessage")) == 4  # the third reply is in Slack

    after_the_dead_senders_lease(world)
    week = _post(world)

    assert week.status == "posted"
    assert len(world.fake.calls_to("chat.postMessage")) == 6
    replies = _replies(world, week)
    assert [r["ts"] for r in replies] == [i.reply_ts for i in week.items]


def test_a_verdict_whose_reply_update_slack_refuses_is_shown_by_the_next_delivery(
    world: SlackWorld,
) -> None:
    from bot.serve import outbox_sender

    _seed(world)
    week = _post(world)
    first = _replies(world, week)[0]
    world.fake.fail_next("chat.update", "internal_error")
    world.slack.block_action(LOOKS_RIGHT_ACTION, message=first["ts"], user_id="U_BOB")
    world.settle()
    assert "✅ Looks right" not in card_texts(world.card(first["ts"])["blocks"])
    assert review.get_item(world.gatehouse.rt, week.items[0].id).verdict == "looks_right"

    world.clock.advance(timedelta(seconds=5))
    assert outbox_sender(world.bot).deliver_due() == 1  # what `serve`'s sender thread does
    assert "✅ Looks right — <@U_BOB>" in card_texts(world.card(first["ts"])["blocks"])
    assert "1/5 reviewed, 0 flagged" in card_texts(world.card(str(week.parent_ts))["blocks"])
