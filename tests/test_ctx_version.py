"""`ctx.version(change)`: new runs take the new path and record a marker; runs recorded without
the change keep their old path when they resume or replay (the rule in pipelines/versions.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines import Gatehouse
from tests import replay_check_pipelines as rc
from tests.engine_pipelines import engines
from tests.fakes.clock import FakeClock


@pytest.fixture(autouse=True)
def _variant() -> Iterator[None]:
    rc.reset()
    yield
    rc.reset()


def _keys(gatehouse: Gatehouse, run_id: str) -> list[tuple[str, str, object]]:
    return [(c.kind, c.key, c.output) for c in gatehouse.run(run_id).calls]


def _approve(gatehouse: Gatehouse, run_id: str) -> str:
    run = gatehouse.run(run_id)
    assert run.status == "waiting", run
    gatehouse.approve(run.waiting_for[0], user="olga")
    resumed = gatehouse.resume(run_id)
    assert resumed is not None
    return resumed.status


def test_a_new_run_takes_the_new_path_and_records_the_marker(any_db_url: str) -> None:
    rc.flags["variant"] = "versioned"
    with engines(any_db_url, FakeClock()) as make:
        gatehouse = make("w1")
        run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
        assert _keys(gatehouse, run.id)[:3] == [
            ("step", "rc_quote#1", 500),
            ("version", "rc-extra#1", True),
            ("step", "rc_extra#1", "checked"),
        ]
        assert _approve(gatehouse, run.id) == "succeeded"
        report = gatehouse.replay(run.id)
    assert [(line.kind, line.key, line.outcome) for line in report.lines][:3] == [
        ("step", "rc_quote#1", "reused"),
        ("version", "rc-extra#1", "reused"),
        ("step", "rc_extra#1", "reused"),
    ]
    assert report.divergence is None and report.output_matches is True


def test_a_run_waiting_before_the_change_resumes_on_its_old_path(any_db_url: str) -> None:
    with engines(any_db_url, FakeClock()) as make:
        gatehouse = make("w1")
        run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")  # old code
        rc.flags["variant"] = "versioned"  # the deploy
        assert _approve(gatehouse, run.id) == "succeeded"
        keys = _keys(gatehouse, run.id)
    assert [k[:2] for k in keys] == [
        ("step", "rc_quote#1"),
        ("tool", "rc_ship#1"),
        ("step", "rc_done#1"),
    ]
    assert "rc-extra" not in str(keys), "no marker: the run never took the new path"


def test_without_ctx_version_the_same_deploy_fails_the_waiting_run(gatehouse: Gatehouse) -> None:
    """The control: the change `ctx.version` guards breaks a waiting run when unguarded."""
    run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
    rc.flags["variant"] = "extra_step"
    assert _approve(gatehouse, run.id) == "failed"
    assert "pipeline changed under a running run" in (gatehouse.run(run.id).error or "")


def test_a_run_resumed_past_its_record_takes_the_new_path_there(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
    rc.flags["variant"] = "versioned_notify"  # a change after the wait point
    assert _approve(gatehouse, run.id) == "succeeded"
    assert [k[:2] for k in _keys(gatehouse, run.id)][2:] == [
        ("step", "rc_done#1"),
        ("version", "rc-notify#1"),
        ("tool", "rc_notify#1"),
    ]
    assert rc.effects == ["ship lamp", "notify lamp"]
    report = gatehouse.replay(run.id)
    assert report.divergence is None and report.output_matches is True


def test_a_replay_of_a_run_finished_without_the_change_keeps_the_old_path(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
    _approve(gatehouse, run.id)
    rc.flags["variant"] = "versioned_notify"
    report = gatehouse.replay(run.id)
    assert report.would_call == [], "its record is the whole run: no notify"
    assert report.divergence is None and report.output_matches is True
    assert [(line.position, line.kind, line.outcome) for line in report.lines][-1] == (
        4,
        "version",
        "old path (not in the record)",
    )


def test_a_replay_of_a_waiting_run_where_the_record_has_another_call_returns_false(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
    rc.flags["variant"] = "versioned"
    report = gatehouse.replay(run.id)
    outcomes = [(line.position, line.kind, line.key, line.outcome) for line in report.lines]
    assert outcomes == [
        (1, "step", "rc_quote#1", "reused"),
        (2, "version", "rc-extra", "old path (not in the record)"),
        (2, "tool", "rc_ship#1", "would call"),
    ]
    assert report.divergence is None


def test_removing_a_version_call_a_waiting_run_recorded_is_a_divergence(
    gatehouse: Gatehouse,
) -> None:
    rc.flags["variant"] = "versioned"
    run = gatehouse.trigger("rc_order", {"item": "lamp"}, user="carol")
    rc.flags["variant"] = "normal"  # the ctx.version call and its branch removed
    report = gatehouse.replay(run.id)
    assert report.divergence is not None and "version 'rc-extra#1'" in report.divergence
    assert _approve(gatehouse, run.id) == "failed"
    assert "pipeline changed under a running run" in (gatehouse.run(run.id).error or "")


def test_gatehouse_run_shows_the_marker(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    rc.flags["variant"] = "versioned"
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.replay_check_pipelines")
    with engines(sqlite_url, FakeClock()) as make:
        run = make("w1").trigger("rc_order", {"item": "lamp"}, user="carol")
    shown = CliRunner().invoke(app, ["run", run.id])
    assert shown.exit_code == 0, shown.stderr
    assert any("version" in line and "rc-extra#1" in line for line in shown.stdout.splitlines())


def test_an_eval_case_takes_the_new_path(gatehouse: Gatehouse) -> None:
    """An eval has no record: it tests today's code, the new path, and writes nothing."""
    from pipelines.evaluation.context import eval_context

    rc.flags["variant"] = "versioned"
    ctx, trace = eval_context(gatehouse.rt, case_id="case-1", pipeline="rc_order")
    assert ctx.version("rc-extra") is True
    assert ctx.version("rc-extra") is True, "a second use of the same change: its own marker"
    assert [(c["kind"], c["key"]) for c in trace.calls] == [
        ("version", "rc-extra#1"),
        ("version", "rc-extra#2"),
    ]
