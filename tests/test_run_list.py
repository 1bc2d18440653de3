"""`gatehouse runs` reads the list in Core alone (storage.run_list): its columns are the model's,
with the model's types, and it lists what the engine's `Gatehouse.runs` lists, in the same
order, with every filter, on both databases; the command prints the same table from either."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from bot.cli.main import app
from bot.cli.tables import runs_table
from pipelines import Gatehouse
from storage import run_list
from storage.models import Base, RunStatus
from storage.runs import runs_table as model_runs_table

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Gatehouse]:
    gatehouse = Gatehouse(any_db_url)
    gatehouse.db.upgrade()
    yield gatehouse
    gatehouse.db.dispose()


def add_runs(gatehouse: Gatehouse) -> None:
    """Twelve runs of three pipelines in several states, a minute apart (no two at once, so
    that the order is the database's to keep, not to choose)."""
    statuses = [RunStatus.SUCCEEDED, RunStatus.WAITING, RunStatus.FAILED, RunStatus.QUEUED]
    rows: list[dict[str, Any]] = []
    for index in range(12):
        created = T0 + timedelta(minutes=index)
        status = statuses[index % len(statuses)]
        finished = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
        rows.append(
            {
                "id": f"run_{index:02d}",
                "pipeline": ("refund", "triage", "digest")[index % 3],
                "status": status,
                "input": {"n": index},
                "output": None,
                "error": None,
                "trigger_user": None if index % 5 == 0 else f"U_{index}",
                "trigger": "cli",
                "created_at": created,
                "started_at": created,
                "finished_at": created + timedelta(seconds=index, microseconds=1500)
                if finished
                else None,
                "updated_at": created,
            }
        )
    with gatehouse.db.transaction() as conn:
        conn.execute(insert(model_runs_table), rows)


def test_the_core_columns_are_the_models_with_the_same_types() -> None:
    model = Base.metadata.tables["runs"]
    for column in run_list.RUNS.columns:
        assert column.name in model.columns, column.name
        assert type(column.type) is type(model.columns[column.name].type), column.name
    hints = typing.get_type_hints(run_list.ListedRun)
    assert run_list.ListedRun._fields == tuple(c.name for c in run_list.RUNS.columns)
    for name in run_list.ListedRun._fields:
        may_be_null = type(None) in typing.get_args(hints[name])
        assert may_be_null == bool(model.columns[name].nullable), name


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"limit": 5},
        {"pipeline": "triage"},
        {"status": "waiting"},
        {"since": T0 + timedelta(minutes=7)},
        {"pipeline": "refund", "status": "succeeded", "since": T0, "limit": 2},
        {"pipeline": "nothing-like-it"},
    ],
)
def test_the_core_list_is_the_engines_list(engine: Gatehouse, filters: dict[str, Any]) -> None:
    add_runs(engine)
    fields = run_list.ListedRun._fields
    expected = [tuple(getattr(run, f) for f in fields) for run in engine.runs(**filters)]
    with engine.db.transaction() as conn:
        listed = run_list.list_runs(conn, **filters)
    assert [tuple(row) for row in listed] == expected
    assert all(row.created_at.tzinfo is UTC for row in listed)  # aware, as the engine's
    if not filters:
        assert len(listed) == 12  # the test has something to compare


def test_gatehouse_runs_prints_the_engines_runs_as_the_table(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("GATEHOUSE_PIPELINES", raising=False)
    gatehouse = Gatehouse(sqlite_url)
    try:
        add_runs(gatehouse)
        for args, filters in (
            ([], {}),
            (["--status", "FAILED", "--limit", "2"], {"status": "failed", "limit": 2}),
            (["--pipeline", "digest"], {"pipeline": "digest"}),
        ):
            expected = "\n".join(runs_table(gatehouse.runs(**filters))) + "\n"
            result = CliRunner().invoke(app, ["runs", *args])
            assert result.exit_code == 0, result.stderr
            assert result.stdout == expected, args
            assert len(expected.splitlines()) == 1 + len(gatehouse.runs(**filters)) > 1
    finally:
        gatehouse.db.dispose()


def test_the_list_needs_no_registered_pipelines_the_engine_does(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.no_such_pipelines_module")
    listed = CliRunner().invoke(app, ["runs"])
    assert (listed.exit_code, listed.stdout) == (0, "no runs match\n")
    whole = CliRunner().invoke(app, ["runs", "--json"])  # every run whole: the engine's views
    assert whole.exit_code == 1
    assert "GATEHOUSE_PIPELINES names 'tests.no_such_pipelines_module'" in whole.stderr
