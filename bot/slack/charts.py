"""The weekly chart as a PNG: runs per day as bars, the day's error rate as a line (percent).

matplotlib is imported inside `render_week_chart` only: it costs tens of megabytes, and an idle
bot never draws. The figure is drawn on the Agg canvas directly (no pyplot, no global state, no
display), and the PNG carries no timestamp or version, so the same series gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from pipelines.operations.daily_stats import DayStats

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 4.0, 100  # 800 x 400 pixels
BAR_COLOR, ERROR_COLOR = "#4a7bb7", "#d1495b"


def render_week_chart(series: Sequence[DayStats], *, title: str) -> bytes:
    """PNG bytes of `series`: volume bars (left axis, runs) and error rate (right axis, %).

    A day where nothing finished has no error rate: the line breaks there rather than drop to
    0 %, which would read as "all good"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    volume_axis = figure.add_subplot()
    positions = list(range(len(series)))
    runs = [day.runs for day in series]
    rates = [float("nan") if day.error_rate is None else day.error_rate * 100 for day in series]

    bars = volume_axis.bar(positions, runs, color=BAR_COLOR, width=0.6, label="runs")
    volume_axis.bar_label(bars, padding=2, fontsize=8)
    volume_axis.set_xticks(positions, [day.day.strftime("%a\n%d %b") for day in series])
    volume_axis.set_ylabel("runs per day")
    volume_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    volume_axis.set_ylim(0, max([*runs, 1]) * 1.15)  # all zeros: an empty chart, not an error
    volume_axis.spines[["top"]].set_visible(False)

    rate_axis = volume_axis.twinx()
    rate_axis.plot(positions, rates, color=ERROR_COLOR, marker="o", linewidth=2, label="error rate")
    rate_axis.set_ylabel("error rate (failed + needs attention)")
    rate_axis.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    highest = max((r for r in rates if r == r), default=0.0)  # r == r skips NaN
    rate_axis.set_ylim(0, max(10.0, min(105.0, highest * 1.25)))
    rate_axis.spines[["top"]].set_visible(False)

    volume_axis.set_title(title)
    # one legend for both axes; the bars' and the line's `label`s name them
    rate_axis.legend(handles=[bars, *rate_axis.get_lines()], loc="upper left", fontsize=8)

    out = io.BytesIO()
    figure.savefig(
        out,
        format="png",
        metadata={"Software": None},  # matplotlib's version; no timestamp is written for PNG
    )
    return out.getvalue()


def render_week_chart_isolated(
    series: Sequence[DayStats], *, title: str, timeout: float = 60
) -> bytes:
    """`render_week_chart` in a short-lived process: matplotlib costs ~55 MB once imported and
    would stay in a long-running bot for good; a chart a day is not worth that."""
    import json
    import subprocess
    import sys

    request = {
        "title": title,
        "series": [
            {"day": d.day.isoformat(), "runs": d.runs, "finished": d.finished, "errors": d.errors}
            for d in series
        ],
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot.slack.charts"],
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"drawing the chart failed: {done.stderr.decode(errors='replace')[-500:]}"
        )
    return done.stdout


def _main() -> None:
    """`python -m bot.slack.charts`: a JSON request on stdin, the PNG on stdout."""
    import json
    import sys
    from datetime import date

    request = json.load(sys.stdin)
    series = [
        DayStats(date.fromisoformat(d["day"]), d["runs"], d["finished"], d["errors"])
        for d in request["series"]
    ]
    sys.stdout.buffer.write(render_week_chart(series, title=request["title"]))


if __name__ == "__main__":
    _main()
