"""Shared fixtures: a migrated database per test (SQLite; PostgreSQL when configured), a fake
clock, and a Gatehouse wired to both."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text

from pipelines import Gatehouse, StaticDirectory, discover
from pipelines.catalog.connectors.tables import create_tables
from pipelines.pipeline import CATALOG
from storage.db import Database
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, requested_mode, slack_world

POSTGRES_URL = os.environ.get("GATEHOUSE_TEST_POSTGRES_URL")
REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}

discover([CATALOG])  # the tests name the example pipelines, as the demo does


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Tests and the CLI they drive reconfigure structlog (level, format, stream); every test
    starts from the configuration the previous one found."""
    was_configured, saved = structlog.is_configured(), structlog.get_config()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the migrations once; each test copies the resulting file."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    create_tables(db)  # the example pipelines' own tables (not Gatehouse's schema)
    db.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite_template: Path) -> str:
    target = tmp_path / "gatehouse.db"
    shutil.copy(migrated_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, migrated; dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("GATEHOUSE_TEST_POSTGRES_URL is not set")
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    database = Database(url)
    database.upgrade()
    create_tables(database)
    database.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """Both databases: the test runs on SQLite, and on PostgreSQL when configured."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def gatehouse(db: Database, clock: FakeClock, notifier: RecordingNotifier) -> Gatehouse:
    return Gatehouse(db, clock=clock, notifier=notifier, directory=StaticDirectory(GROUPS))


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible server on loopback, scripted per test (tests/fakes/openai.py)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """The Slack Web API on loopback, recording every call (tests/fakes/slack.py)."""
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(params=["http", "socket"])
def slack_mode(request: pytest.FixtureRequest) -> str:
    """Both ways Slack reaches the bot: HTTP mode (signed requests to /slack/events) and Socket
    Mode (envelopes over the bot's WebSocket); pass it to `slack_world(..., mode=slack_mode)`."""
    return str(request.param)


@pytest.fixture
def world(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> Iterator[SlackWorld]:
    """The whole bot on loopback with default settings (tests/slack_harness.py), over HTTP; a
    test marked `in_both_modes` runs once per `slack_mode`. A module needing other settings
    defines its own `world`."""
    with slack_world(fake_slack, sqlite_url, clock, mode=requested_mode(request)) as built:  # type: ignore[arg-type]
        yield built
