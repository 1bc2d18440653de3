"""`gatehouse audit export`: the audit trail as JSON Lines for a SIEM, streamed in pages; each
line has stable fields and the hashes, so the receiver can check every link and recompute the
plain hashes; positions count from the chain's start, pruned entries included."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines.retention import prune_runs
from storage.audit import entry_hash
from storage.audit_export import FIELDS, export_entries
from storage.db import Database
from tests.prune_history import BASE, seed
from tests.test_prune import NOW, engine, roll_old_history


def recompute(entry: dict[str, object]) -> str:
    return entry_hash(
        at=datetime.fromisoformat(str(entry["at"])),
        event=str(entry["event"]),
        actor=entry["actor"],  # type: ignore[arg-type]
        run_id=entry["run_id"],  # type: ignore[arg-type]
        call_id=entry["call_id"],  # type: ignore[arg-type]
        tool=entry["tool"],  # type: ignore[arg-type]
        approval_id=entry["approval_id"],  # type: ignore[arg-type]
        idempotency_key=entry["idempotency_key"],  # type: ignore[arg-type]
        detail=entry["detail"],
        prev_hash=str(entry["prev_hash"]),
    )


def test_export_is_a_verifiable_piece_of_the_chain_read_in_pages(any_db_url: str) -> None:
    db = Database(any_db_url)
    seed(db, 800)  # 202 audit entries
    gatehouse = engine(db)
    roll_old_history(db, gatehouse)
    prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW)  # cuts the first 120
    entries = list(export_entries(db, since=BASE, page=7))  # many pages
    assert entries and all(tuple(e) == FIELDS for e in entries)
    assert entries[0]["position"] == 121 and entries[0]["event"] == "run.finished"
    for before, after in pairwise(entries):
        assert after["prev_hash"] == before["hash"]
        assert after["position"] == before["position"] + 1  # type: ignore[operator]
    assert all(recompute(e) == e["hash"] for e in entries)  # plain (v1) hashes, recomputed
    assert entries[-1]["event"] == "runs.pruned"
    later = list(export_entries(db, since=NOW + timedelta(days=1)))
    assert later == []
    db.dispose()


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    db = Database(sqlite_url)
    seed(db, 40)
    db.dispose()
    return sqlite_url


def test_cli_streams_jsonl_to_stdout_and_to_a_file(cli_db: str, tmp_path: Path) -> None:
    since = (BASE - timedelta(days=1)).isoformat()
    out = CliRunner().invoke(app, ["audit", "export", "--since", since, "--format", "jsonl"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 12 and lines[0]["position"] == 1
    target = tmp_path / "audit.jsonl"
    to_file = CliRunner().invoke(app, ["audit", "export", "--since", since, "--out", str(target)])
    assert to_file.exit_code == 0, to_file.output
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines
    assert "wrote 12 audit entries" in to_file.stderr


def test_cli_refuses_an_unknown_format(cli_db: str) -> None:
    result = CliRunner().invoke(app, ["audit", "export", "--since", "30d", "--format", "csv"])
    assert result.exit_code == 1 and "use one of: jsonl" in result.output
