"""Random samples of the runs that finished in a window, uniform or stratified by pipeline,
without sorting the window: a few milliseconds out of a million runs.

Uniform. A window of at most `SMALL_WINDOW` runs is listed from its index and sampled exactly.
A larger one is sampled by random keys: run ids are `run_` and 16 random hex digits, so the
first run at or after a uniformly random key (one primary-key seek) is a random run of the
window, and one statement sends a whole batch of keys. Each run's chance is the stretch of key
space between the previous id and its own. That stretch varies from run to run, but ids are
drawn independently of everything else about a run, so no pipeline, time, status or input is
favoured: every run is equally likely before its id is drawn. Duplicates are drawn again.

Stratified. The sample is shared among the pipelines with runs in the window as evenly as they
allow (`allocate`), then each share is drawn uniformly within its pipeline, whichever way is
cheaper for it (`_Stratum`). A quiet pipeline is listed from `ix_runs_pipeline_created`, so
only runs created at most `STRATIFY_LOOKBACK` before the window are found for it: a run that
waited longer than that before it finished is left out of a stratified pick.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from storage import sampling as rows
from storage.sampling import Window

SMALL_WINDOW = 5000  # a window this small is listed whole and sampled exactly
LIST_PIPELINE = 2000  # stratified: a pipeline with this few runs is always listed
STRATIFY_LOOKBACK = timedelta(days=7)  # stratified: created this long before the window
LINE_FACTOR = 3  # stratified: list a pipeline up to LINE_FACTOR * sqrt(table rows * wanted) runs
DRAWS_PER_RUN = 20  # random keys allowed per wanted run before giving up on duplicates


def _random_key(rng: random.Random) -> str:
    return f"run_{rng.getrandbits(64):016x}"


def _seek(
    conn: Connection, window: Window, size: int, rng: random.Random, *, pipeline: str | None = None
) -> list[str]:
    """Up to `size` distinct runs, each the first at or after a random key (the id space is a
    circle: past the last run comes the first)."""
    found: dict[str, None] = {}
    first: list[str | None] = []  # the window's first run, looked up once if needed
    # A seek over the whole window costs a few rows, one restricted to a pipeline many more:
    # only the first kind is worth a spare key or two against duplicates.
    spare = 2 if pipeline is None else 0
    draws = 0
    while len(found) < size and draws < size * DRAWS_PER_RUN:
        keys = [_random_key(rng) for _ in range(size - len(found) + spare)]
        draws += len(keys)
        for hit in rows.first_runs_at_or_after(conn, keys, window, pipeline=pipeline):
            if hit is None:
                if not first:
                    first.extend(rows.first_runs_at_or_after(conn, [""], window, pipeline=pipeline))
                hit = first[0]
                if hit is None:  # the window is empty
                    return list(found)
            if len(found) < size:
                found.setdefault(hit)
    return list(found)


def allocate(size: int, available: Mapping[str, int], rng: random.Random) -> dict[str, int]:
    """`size` slots shared as evenly as possible (max-min fair): a pipeline with fewer runs than
    its share gets them all and the rest is shared among the others; slots that do not divide
    evenly go to pipelines chosen at random."""
    quotas = dict.fromkeys(available, 0)
    open_ = sorted(p for p, n in available.items() if n > 0)
    remaining = size
    while open_:
        fair = remaining / len(open_)
        small = [p for p in open_ if available[p] <= fair]
        if not small:
            break
        for name in small:
            quotas[name] = available[name]
            remaining -= available[name]
        open_ = [p for p in open_ if p not in small]
    if open_:
        share, extra = divmod(remaining, len(open_))
        lucky = set(rng.sample(open_, extra))
        for name in open_:
            quotas[name] = share + (name in lucky)
    return quotas


def _sample_listed(
    listed: Sequence[tuple[Any, str]], size: int, stratify: bool, rng: random.Random
) -> list[Any]:
    ordered = sorted(listed)  # the index's order is not the seed's business
    if not stratify:
        return [handle for handle, _ in rng.sample(ordered, min(size, len(ordered)))]
    by_pipeline: dict[str, list[Any]] = {}
    for handle, pipeline in ordered:
        by_pipeline.setdefault(pipeline, []).append(handle)
    quotas = allocate(size, {p: len(hs) for p, hs in by_pipeline.items()}, rng)
    picked: list[Any] = []
    for pipeline in sorted(by_pipeline):
        picked += rng.sample(by_pipeline[pipeline], quotas[pipeline])
    return picked


class _Stratum:
    """One pipeline's share of a stratified pick, drawn the cheaper of two ways.

    Listed: the handles of its runs created around the window come from the index (about
    0.5 µs each on SQLite, 3 µs on PostgreSQL, which reads the table) and are tried in random
    order, a few lookups per run kept: the cost grows with its runs. Sought: random keys
    restricted to the pipeline walk the primary key, about `table rows / its runs in the window`
    rows (6 µs each) per run found: the cost shrinks with its runs. They meet at a few times
    `sqrt(table rows * wanted)` runs (`LINE_FACTOR`, measured on 1M runs in 50 pipelines).
    """

    def __init__(self, pipeline: str, window: Window) -> None:
        self.pipeline = pipeline
        self.window = window
        self.picked: list[str] = []
        self.busy: bool | None = None  # unknown until measured
        self.candidates: list[Any] = []  # listed handles; the first `tried` were tried
        self.tried = 0

    def list_runs(self, conn: Connection, line: int) -> None:
        self.busy = False
        self.candidates = rows.created_handles(
            conn,
            self.pipeline,
            since=self.window.since - STRATIFY_LOOKBACK,
            until=self.window.until,
            limit=line,
        )

    def draw(self, conn: Connection, wanted: int, rng: random.Random) -> None:
        """Pick until `wanted` runs are held, or the pipeline has no more in the window."""
        if self.busy:
            more = _seek(conn, self.window, wanted, rng, pipeline=self.pipeline)
            held = set(self.picked)
            self.picked += [r for r in more if r not in held][: wanted - len(self.picked)]
            return
        candidates = self.candidates
        while len(self.picked) < wanted and self.tried < len(candidates):
            # A Fisher-Yates shuffle, only as far as it is needed.
            end = min(len(candidates), self.tried + 3 * (wanted - len(self.picked)))
            for i in range(self.tried, end):
                j = rng.randrange(i, len(candidates))
                candidates[i], candidates[j] = candidates[j], candidates[i]
            batch = candidates[self.tried : end]
            self.tried = end
            in_window = rows.run_ids_of(conn, batch, self.window)
            self.picked += [in_window[h] for h in batch if h in in_window]


def _stratified(conn: Connection, window: Window, size: int, rng: random.Random) -> list[str]:
    """The slots shared among pipelines (`allocate`), each share drawn within its pipeline.
    Availability starts as an upper bound (runs created around the window, counted up to
    `size`, all pipelines in one statement) and is lowered when a pipeline is drawn dry."""
    since = window.since - STRATIFY_LOOKBACK
    available = rows.count_created(
        conn, rows.pipeline_names(conn), since=since, until=window.until, cap=size
    )
    strata = {name: _Stratum(name, window) for name, count in available.items() if count}
    table_rows = rows.runs_table_size(conn) or SMALL_WINDOW
    while True:
        quotas = allocate(size, available, rng)
        lines = {
            name: max(LIST_PIPELINE, int(LINE_FACTOR * math.sqrt(table_rows * wanted)))
            for name, wanted in quotas.items()
            if wanted and strata[name].busy is None
        }
        if lines:
            counts = rows.count_created(
                conn, list(lines), since=since, until=window.until, cap=max(lines.values()) + 1
            )
            for name, line in lines.items():
                if counts[name] > line:
                    strata[name].busy = True
                else:
                    strata[name].list_runs(conn, line)
        short = False
        for name, wanted in quotas.items():
            stratum = strata.get(name)
            if stratum is None or not wanted:
                continue
            if wanted > len(stratum.picked):
                stratum.draw(conn, wanted, rng)
            if len(stratum.picked) < wanted:  # drawn dry: it has no more than that
                available[name] = len(stratum.picked)
                short = True
        if not short:
            break
    return [run for name in sorted(strata) for run in strata[name].picked[: quotas[name]]]


def pick_runs(
    conn: Connection, window: Window, size: int, *, stratify: bool, rng: random.Random
) -> list[str]:
    """`size` random runs of the window (fewer when it holds fewer)."""
    if rows.count_window(conn, window, cap=SMALL_WINDOW + 1) <= SMALL_WINDOW:
        listed = rows.window_handles(conn, window, limit=SMALL_WINDOW)
        handles = _sample_listed(listed, size, stratify, rng)
        ids = rows.run_ids_of(conn, handles)
        return [ids[h] for h in handles]
    if stratify:
        return _stratified(conn, window, size, rng)
    return _seek(conn, window, size, rng)
