"""The one read a live run makes before each tool or model call: is the run still running under
this worker's claim, and is its pipeline paused? One statement, one round trip."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection

_SQL = (
    "SELECT runs.status, runs.claimed_by, pipeline_pauses.paused FROM runs "
    "LEFT JOIN pipeline_pauses ON pipeline_pauses.pipeline = runs.pipeline "
    "WHERE runs.id = {mark}"
)
_STATEMENTS = {"sqlite": _SQL.format(mark="?"), "postgresql": _SQL.format(mark="%s")}


class BoundaryState(NamedTuple):
    """The run's status and claim, and whether its pipeline is paused."""

    status: str
    claimed_by: str | None
    paused: bool


def boundary_state(conn: Connection, run_id: str) -> BoundaryState | None:
    """The run's state at a call boundary (None: no such run), on the driver directly."""
    driver = conn.connection.driver_connection
    assert driver is not None
    row = driver.execute(_STATEMENTS[conn.dialect.name], (run_id,)).fetchone()
    if row is None:
        return None
    return BoundaryState(str(row[0]), row[1], bool(row[2]))
