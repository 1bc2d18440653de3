"""Plain-text tables for the terminal, and the list of runs (`gatehouse runs`) drawn as one.

Kept apart from bot.cli.render, which imports the engine's views: the list of runs needs only
these and bot.formatting, so `gatehouse runs` starts without the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from bot.formatting import took, when


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    all_rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines


class RunLine(Protocol):
    """What a line of the list shows: an engine `Run` or a `storage.run_list` row."""

    @property
    def id(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def trigger_user(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...


def runs_table(runs: Sequence[RunLine]) -> list[str]:
    if not runs:
        return ["no runs match"]
    rows = [
        [
            r.id,
            r.pipeline,
            r.status,
            r.trigger_user or "-",
            when(r.created_at),
            took(r.created_at, r.finished_at),
        ]
        for r in runs
    ]
    return table(["run", "pipeline", "status", "user", "created", "took"], rows)
