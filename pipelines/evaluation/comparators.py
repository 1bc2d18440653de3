"""Scoring a case: the output against `expected`, field by field, and the would-calls against
`expect_calls`.

Only the fields `expected` names are compared (a partial expectation is a test of those fields);
nested objects are compared field by field too, under dotted names (`refund.amount`). Equality is
exact unless the pipeline registers a comparator for the field:

    comparators("ticket_triage", {"message": case_insensitive, "amount": within(0.01)})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

Comparator = Callable[[Any, Any], bool]  # (expected, actual) -> counts as equal
MISSING = "<missing>"
WHOLE = "(output)"

_REGISTERED: dict[str, dict[str, Comparator]] = {}


def comparators(pipeline: str, fields: Mapping[str, Comparator]) -> None:
    """Register how `pipeline`'s output fields are compared (dotted names for nested fields;
    `(output)` for an output that is not an object). Later calls add to or replace earlier ones."""
    for name, compare in fields.items():
        if not callable(compare):
            raise TypeError(f"comparator for {pipeline}.{name} is not callable: {compare!r}")
    _REGISTERED.setdefault(pipeline, {}).update(fields)


def registered_comparators(pipeline: str) -> dict[str, Comparator]:
    return dict(_REGISTERED.get(pipeline, {}))


def case_insensitive(expected: Any, actual: Any) -> bool:
    """Text equal but for case and surrounding space."""
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.strip().casefold() == actual.strip().casefold()
    return bool(expected == actual)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def within(tolerance: float, *, relative: bool = False) -> Comparator:
    """Numbers (or numeric text, as Decimals are written) within `tolerance` of each other;
    `relative=True`: within that fraction of the expected value."""

    def compare(expected: Any, actual: Any) -> bool:
        e, a = _number(expected), _number(actual)
        if e is None or a is None:
            return bool(expected == actual)
        bound = tolerance * abs(e) if relative else tolerance
        return math.isclose(e, a, rel_tol=0.0, abs_tol=bound) or abs(e - a) <= bound

    compare.__name__ = f"within({tolerance}{', relative' if relative else ''})"
    return compare


def ignore(expected: Any, actual: Any) -> bool:
    """Any value (a generated id, a timestamp)."""
    return True


def diff_output(
    expected: Any, actual: Any, fields: Mapping[str, Comparator] | None = None
) -> dict[str, dict[str, Any]]:
    """`{field: {"expected", "actual"}}` for every field of `expected` the output gets wrong."""
    found: dict[str, dict[str, Any]] = {}
    _diff(expected, actual, "", fields or {}, found)
    return found


def _diff(
    expected: Any,
    actual: Any,
    path: str,
    fields: Mapping[str, Comparator],
    found: dict[str, dict[str, Any]],
) -> None:
    compare = fields.get(path or WHOLE)
    if compare is not None:
        if not compare(expected, actual):
            found[path or WHOLE] = {"expected": expected, "actual": actual}
        return
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        for key, value in expected.items():
            name = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found[name] = {"expected": value, "actual": MISSING}
            else:
                _diff(value, actual[key], name, fields, found)
        return
    if expected != actual or _kinds_differ(expected, actual):
        found[path or WHOLE] = {"expected": expected, "actual": actual}


def _kinds_differ(expected: Any, actual: Any) -> bool:
    # 1 == 1.0 == True in Python; in a test set `true` and `1` are different answers.
    return isinstance(expected, bool) != isinstance(actual, bool)


def diff_calls(expected: Sequence[Any], actual: Sequence[Mapping[str, Any]]) -> list[str]:
    """What differs between `expect_calls` and the would-calls, one line each: same tools in the
    same order, and every argument an expected call names equal (the others are not checked)."""
    problems: list[str] = []
    for position, want in enumerate(expected, start=1):
        if position > len(actual):
            problems.append(f"call {position}: expected {want.tool}, but nothing more was called")
            continue
        got = actual[position - 1]
        if got.get("tool") != want.tool:
            problems.append(f"call {position}: expected {want.tool}, would call {got.get('tool')}")
            continue
        args = got.get("args") or {}
        for key, value in (want.args or {}).items():
            if key not in args:
                problems.append(f"call {position} ({want.tool}): no argument {key!r}")
            elif args[key] != value or _kinds_differ(value, args[key]):
                problems.append(
                    f"call {position} ({want.tool}): {key} = {args[key]!r}, expected {value!r}"
                )
    for position in range(len(expected) + 1, len(actual) + 1):
        problems.append(
            f"call {position}: would call {actual[position - 1].get('tool')} (not expected)"
        )
    return problems
