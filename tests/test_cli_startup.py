"""A one-shot `gatehouse` command starts fast: --help and the read-only commands import only
what they use (checked in real processes, from sys.modules) and check the schema revision
instead of running Alembic; a database behind the code is an error naming `gatehouse db
upgrade`; database errors name the file or the host; usage lines show NAME."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner, Result

from bot.cli.main import app
from storage.db import MIGRATIONS_DIR, Database
from storage.runs import runs_table
from storage.schema_version import code_head, migration_graph
from tests.conftest import REPO_ROOT

# Never needed to print help or read runs; each costs a noticeable share of a start.
HEAVY_FOR_READS = ("openai", "matplotlib", "slack_sdk", "slack_bolt", "alembic", "uvicorn")
HEAVY_FOR_READS += ("bot.sandbox", "bot.slack", "pipelines.evaluation", "bot.demo")
# What the list of runs leaves out beyond those: it reads a few columns in Core, so neither the
# engine (its views, runtime, the registered pipelines) nor the ORM models, nor structlog (and
# rich under it) with nothing to log, nor SQLAlchemy's PostgreSQL dialect on SQLite.
HEAVY_FOR_RUNS = (*HEAVY_FOR_READS, "sqlalchemy.orm", "storage.models", "structlog", "rich")
HEAVY_FOR_RUNS += ("sqlalchemy.dialects.postgresql", "bot.cli.render", "pipelines.views")
HEAVY_FOR_RUNS += ("pipelines.runtime", "pipelines.authorization", "pipelines.catalog")
HEAVY_FOR_HELP = (*HEAVY_FOR_READS, "sqlalchemy", "pydantic", "apscheduler", "pipelines", "storage")

PROBE = """
import json, sys
from bot.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def imported_by(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.fixture
def process_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["GATEHOUSE_DATABASE_URL"] = sqlite_url
    env["GATEHOUSE_PIPELINES"] = "pipelines.catalog"  # registered pipelines, as deployed
    return env


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.cli_pipelines")
    for name in ("GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def alembic_revision(sqlite_url: str) -> str:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


# -- what a start imports ------------------------------------------------------------------------


def test_help_imports_neither_the_engine_nor_the_database_nor_slack(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    code, modules, stdout = imported_by(["--help"], process_env, tmp_path)
    assert code == 0
    assert "runs" in stdout and "audit" in stdout  # the whole tree is listed all the same
    assert loaded(modules, HEAVY_FOR_HELP) == []


def test_runs_reads_without_alembic_openai_slack_or_the_sandbox(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    code, modules, stdout = imported_by(["runs"], process_env, tmp_path)
    assert (code, stdout.strip()) == (0, "no runs match")
    assert "storage.schema_version" in modules  # it did check the schema
    assert loaded(modules, HEAVY_FOR_READS) == []


def test_runs_reads_without_the_engine_the_orm_or_structlog(
    process_env: dict[str, str], tmp_path: Path, sqlite_url: str
) -> None:
    now = datetime.now(UTC)
    database = Database(sqlite_url)
    with database.transaction() as conn:
        conn.execute(
            insert(runs_table),
            [
                {"id": "run_listed", "pipeline": "refund_request", "status": "waiting"}
                | {"input": {}, "trigger": "cli", "created_at": now, "updated_at": now}
            ],
        )
    database.dispose()
    for args in (["runs"], ["runs", "--status", "WAITING", "--since", "1h", "--limit", "3"]):
        code, modules, stdout = imported_by(args, process_env, tmp_path)
        assert code == 0, args
        assert stdout.split()[:6] == ["run", "pipeline", "status", "user", "created", "took"]
        assert "run_listed  refund_request  waiting" in stdout, args  # it did list the run
        assert loaded(modules, HEAVY_FOR_RUNS) == [], args


def test_pending_and_audit_verify_read_without_alembic_or_slack(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    for args in (["pending"], ["audit", "verify"], ["stats"], ["alerts"]):
        code, modules, _ = imported_by(args, process_env, tmp_path)
        assert code == 0, args
        assert loaded(modules, HEAVY_FOR_READS) == [], args


def test_idle_bot_modules_leave_out_matplotlib_evaluation_sandbox_and_openai() -> None:
    probe = (
        "import sys, json, bot.serve, bot.slack.app, bot.scheduler;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "slack_bolt" in modules  # the probe did load the bot
    heavy = ("openai", "matplotlib", "bot.sandbox", "pipelines.evaluation", "alembic")
    assert loaded(modules, heavy) == []


# -- the schema check ----------------------------------------------------------------------------


def test_code_head_read_from_the_files_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    assert code_head() == script.get_current_head()
    assert set(migration_graph()) == {rev.revision for rev in script.walk_revisions()}


def test_a_database_behind_the_code_is_an_error_naming_db_upgrade(
    cli_env: str, tmp_path: Path
) -> None:
    behind = tmp_path / "behind.db"
    url = f"sqlite:///{behind}"
    older = next(rev for rev, down in migration_graph().items() if down and rev != code_head())
    Database(url).upgrade(older)
    os.environ["GATEHOUSE_DATABASE_URL"] = url  # monkeypatch restores it (cli_env)
    for args in (["runs"], ["run", "r_x"], ["pending"], ["audit", "verify"], ["stats"]):
        result = gh(*args)
        assert result.exit_code == 1, args
        assert "gatehouse db upgrade" in result.stderr, args
        assert f"at schema revision {older}, behind this code's {code_head()}" in result.stderr
    assert alembic_revision(url) == older  # a read never migrates
    upgraded = gh("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert gh("runs").stdout.strip() == "no runs match"


def test_a_write_command_still_migrates_a_database_behind(cli_env: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    older = next(rev for rev, down in migration_graph().items() if down and rev != code_head())
    Database(url).upgrade(older)
    os.environ["GATEHOUSE_DATABASE_URL"] = url
    result = gh("trigger", "cli_review", "--input", '{"text": "fine?"}', "--as", "U_ADA")
    assert result.exit_code == 0, result.stderr
    assert alembic_revision(url) == code_head()


def test_a_database_from_a_newer_gatehouse_is_refused_by_reads(cli_env: str) -> None:
    with sqlite3.connect(cli_env.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    result = gh("runs")
    assert result.exit_code == 1
    assert "at schema revision 9999, which this code does not know" in result.stderr


def test_a_fresh_database_is_created_by_a_read(cli_env: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    os.environ["GATEHOUSE_DATABASE_URL"] = url
    assert gh("runs").stdout.strip() == "no runs match"
    assert alembic_revision(url) == code_head()


# -- errors that name the database, usage lines ----------------------------------------------------


def test_a_bad_sqlite_path_names_the_path_and_what_to_do(cli_env: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "g.db"
    os.environ["GATEHOUSE_DATABASE_URL"] = f"sqlite:///{missing}"
    for args in (["runs"], ["db", "upgrade"], ["trigger", "cli_review", "--input", "{}"]):
        result = gh(*args)
        assert result.exit_code == 1, args
        line = result.stderr.strip()
        assert line.startswith(f"error: cannot open the SQLite file {missing}"), line
        assert f"the directory {missing.parent} does not exist" in line
        assert "GATEHOUSE_DATABASE_URL" in line


def test_an_unreachable_postgresql_names_its_host(cli_env: str) -> None:
    os.environ["GATEHOUSE_DATABASE_URL"] = "postgresql+psycopg://ops@127.0.0.1:1/gatehouse"
    result = gh("runs")
    assert result.exit_code == 1
    assert "database error at PostgreSQL at 127.0.0.1:1/gatehouse as ops:" in result.stderr


def test_usage_lines_name_arguments_in_capitals(cli_env: str) -> None:
    helped = gh("trigger", "--help")
    assert "Usage: gatehouse trigger [OPTIONS] NAME\n" in helped.stdout
    assert "{name}" not in helped.stdout
    assert "Usage: gatehouse ready [OPTIONS] [PIPELINE]" in gh("ready", "--help").stdout
    missing = gh("run")
    assert missing.exit_code == 2
    assert "Missing argument 'RUN_ID'" in missing.stderr


def test_the_sandbox_commands_defaults_are_the_sandboxs() -> None:
    from bot.cli import sandbox as cli_sandbox
    from bot.sandbox import DEFAULT_HOST, DEFAULT_PORT

    assert (cli_sandbox.DEFAULT_HOST, cli_sandbox.DEFAULT_PORT) == (DEFAULT_HOST, DEFAULT_PORT)


def test_a_read_pauses_the_cycle_collector_only_while_it_runs(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from storage import run_list

    listing = run_list.list_runs
    collecting: list[bool] = []

    def list_runs(*args: Any, **kwargs: Any) -> list[run_list.ListedRun]:
        collecting.append(gc.isenabled())
        return listing(*args, **kwargs)

    monkeypatch.setattr(run_list, "list_runs", list_runs)
    assert gc.isenabled()
    assert gh("runs").stdout.strip() == "no runs match"
    assert (collecting, gc.isenabled()) == ([False], True)  # paused, then given back
    assert gh("runs", "--status", "nonsense").exit_code == 1
    assert gc.isenabled()  # and after a refusal
    assert gh("run", "run_nope").exit_code == 1
    assert gc.isenabled()


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--help"],
        ["runs", "--bogus"],
        ["runs", "extra"],
        ["run"],
        ["trigger", "--help"],
        ["db"],
        ["db", "upgrade", "--help"],
        ["audit", "verify", "--help"],
        ["stats", "--help"],
        ["pending"],
    ],
)
def test_one_command_built_alone_answers_as_the_whole_tree_does(
    cli_env: str, args: list[str]
) -> None:
    from bot.cli.main import app_for

    alone = app_for(args)
    assert len(alone.registered_commands) + len(alone.registered_groups) == 1
    by_alone, by_tree = CliRunner().invoke(alone, args), CliRunner().invoke(app, args)
    assert (by_alone.exit_code, by_alone.stdout, by_alone.stderr) == (
        by_tree.exit_code,
        by_tree.stdout,
        by_tree.stderr,
    )


def test_no_command_an_option_or_a_misspelling_gets_the_whole_tree() -> None:
    from bot.cli.main import app_for

    for args in ([], ["--help"], ["rns"], ["--json", "runs"]):
        assert app_for(args) is app, args
