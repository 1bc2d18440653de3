"""Who produced each value an approval card shows from the run's earlier answers: a model (which
one, and its confidence) or a person ("answered by @bob at 14:02"), never one for the other.

A call answered by a person is recorded with `meta.answered_by == "human"` (and who, and when:
`pipelines.tasks.collect`); its output is the person's, so it is never headed "what the model
said" and shows no confidence (a person is not asked for one). What the model had tried before
it came to the person is said as the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.formatting import clock
from bot.slack.mrkdwn import code, escape, mention, truncate
from pipelines.views import CallView

HUMAN = "human"


def answered_by_person(call: CallView) -> bool:
    """The call's output is a person's answer: a human task, or a model call's human exit."""
    meta = call.meta if isinstance(call.meta, Mapping) else {}
    return call.kind == HUMAN or meta.get("answered_by") == HUMAN


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _answered_at(call: CallView, meta: Mapping[str, Any]) -> datetime | None:
    text = meta.get("answered_at")
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


def _without_confidence(output: Any) -> Any:
    """A person's answer as they gave it: the `confidence` the output model carries is the
    engine's filler for a person (1.0), not a figure anyone gave."""
    if isinstance(output, Mapping) and "confidence" in output:
        return {k: v for k, v in output.items() if k != "confidence"}
    return output


def _person_line(call: CallView, meta: Mapping[str, Any], limit: int) -> str:
    who = meta.get("answered_by_user")
    at = _answered_at(call, meta)
    said = f"answered by {mention(truncate(str(who), 100)) if who else 'a person'}"
    if at is not None:
        started = call.started_at
        started = started.replace(tzinfo=UTC) if started.tzinfo is None else started
        said += f" at {clock(at, same_day_as=started.astimezone(UTC))}"
    line = f"• *{escape(truncate(call.name, 100))}* — {said}: {code(_without_confidence(call.output), limit)}"
    if call.kind == "llm":
        # What the model had tried, said as the model's: which one, its own confidence, why not.
        came = "came to a person"
        model = meta.get("model")
        if model:
            about = escape(truncate(str(model), 80))
            confidence = _number(meta.get("model_confidence"))
            if confidence is not None:
                about += f", confidence {confidence:.2f}"
            came += f" from the model ({about})"
        reason = meta.get("reason")
        came += f": {escape(truncate(str(reason), 200))}" if reason else ""
        line += f"\n    _{came}_"
    return line


def _model_line(call: CallView, meta: Mapping[str, Any], limit: int) -> str:
    about = [escape(truncate(str(meta["model"]), 80))] if meta.get("model") else []
    confidence = _number(meta.get("confidence"))
    if confidence is not None:
        about.append(f"confidence {confidence:.2f}")
    label = f"• *{escape(truncate(call.name, 100))}*" + (f" ({', '.join(about)})" if about else "")
    if call.output is not None:
        return f"{label}: {code(call.output, limit)}"
    failure = meta.get("reason") or call.error or "no answer"
    return f"{label}: no answer — {escape(truncate(str(failure), 300))}"


def earlier_answers(calls: list[CallView], shown_count: int, limit: int) -> str:
    """The last `shown_count` of the run's model calls and human answers before the gated call,
    each said as its producer's, under a heading that is true of all of them."""
    shown = calls[-shown_count:]
    people = [c for c in shown if answered_by_person(c)]
    if not people:
        heading = "*What the model said*"
    elif len(people) == len(shown):
        heading = "*What a person answered*"
    else:
        heading = "*What the model and people said*"
    lines = [heading]
    if len(calls) > len(shown):
        lines.append(f"_{len(calls) - len(shown)} earlier answers not shown_")
    for call in shown:
        meta = call.meta if isinstance(call.meta, Mapping) else {}
        if answered_by_person(call):
            lines.append(_person_line(call, meta, limit))
        else:
            lines.append(_model_line(call, meta, limit))
    return "\n".join(lines)
