"""The lead pipeline's ICP rubric: a pure function, checked at every boundary it writes down."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.catalog.lead_qualify import (
    Firmographics,
    LeadSignals,
    role_seniority,
    score_lead,
    tier_for,
)


def signals(intent: str = "high", role: str = "VP Engineering") -> LeadSignals:
    return LeadSignals.model_validate(
        {"company": "Acme", "role": role, "intent": intent, "confidence": 0.9}
    )


def firm(**overrides: Any) -> Firmographics:
    """A company that fits the ICP on every firmographic row: 20 + 15 + 10 + 5 = 50 points."""
    values: dict[str, Any] = {
        "domain": "acme.example",
        "name": "Acme",
        "employees": 500,
        "industry": "software",
        "country": "US",
        "revenue_band": "10M-50M",
    }
    values.update(overrides)
    return Firmographics(**values)


NO_FIRMOGRAPHIC_FIT = {
    "employees": 10,
    "industry": "mining",
    "revenue_band": "<1M",
    "country": "BR",
}


def firmographic_points(**overrides: Any) -> int:
    """The firmographic share of a score: total minus the 30 + 20 of high intent and a VP."""
    return score_lead(signals(), firm(**overrides)).points - 50


# -- totals and tiers ------------------------------------------------------------------------


def test_a_perfect_fit_scores_the_full_hundred_and_is_high() -> None:
    score = score_lead(signals(), firm())

    assert (score.points, score.tier) == (100, "high")
    assert len(score.reasons) == 6, score.reasons


def test_no_fit_at_all_scores_zero_and_is_low() -> None:
    score = score_lead(signals(intent="none", role="Student"), firm(**NO_FIRMOGRAPHIC_FIT))

    assert (score.points, score.tier) == (0, "low")


@pytest.mark.parametrize(
    ("points", "tier"),
    [(100, "high"), (70, "high"), (69, "mid"), (40, "mid"), (39, "low"), (0, "low")],
)
def test_tier_thresholds_are_inclusive_at_70_and_40(points: int, tier: str) -> None:
    assert tier_for(points) == tier


def test_a_lead_at_exactly_70_points_is_high_and_at_65_is_mid() -> None:
    # high intent 30 + VP 20 + 500 employees 20, nothing else: 70.
    seventy = score_lead(signals(), firm(industry="mining", revenue_band="1B+", country="BR"))
    # high intent 30 + manager 10 + 500 employees 20 + US 5: 65.
    sixty_five = score_lead(
        signals(role="Engineering Manager"),
        firm(industry="mining", revenue_band="1B+"),
    )

    assert (seventy.points, seventy.tier) == (70, "high")
    assert (sixty_five.points, sixty_five.tier) == (65, "mid")


def test_a_lead_at_exactly_40_points_is_mid_and_at_35_is_low() -> None:
    # medium intent 15 + head of 20 + US 5: 40; the same from Brazil: 35.
    forty = score_lead(
        signals(intent="medium", role="Head of Data"),
        firm(**{**NO_FIRMOGRAPHIC_FIT, "country": "US"}),
    )
    thirty_five = score_lead(
        signals(intent="medium", role="Head of Data"), firm(**NO_FIRMOGRAPHIC_FIT)
    )

    assert (forty.points, forty.tier) == (40, "mid")
    assert (thirty_five.points, thirty_five.tier) == (35, "low")


# -- the intent overrides ----------------------------------------------------------------------


def test_intent_none_is_low_whatever_the_points() -> None:
    score = score_lead(signals(intent="none"), firm())

    assert (score.points, score.tier) == (70, "low")
    assert "not a buyer" in score.reasons[-1]


def test_intent_low_is_capped_at_mid() -> None:
    score = score_lead(signals(intent="low"), firm())

    assert (score.points, score.tier) == (75, "mid")
    assert "at most mid" in score.reasons[-1]


def test_intent_medium_with_a_perfect_fit_is_high() -> None:
    assert score_lead(signals(intent="medium"), firm()).tier == "high"


@pytest.mark.parametrize(
    ("intent", "points"), [("high", 30), ("medium", 15), ("low", 5), ("none", 0)]
)
def test_intent_points(intent: str, points: int) -> None:
    score = score_lead(signals(intent=intent, role=""), firm(**NO_FIRMOGRAPHIC_FIT))

    assert score.points == points


# -- role ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "seniority"),
    [
        ("CEO", "decision_maker"),
        ("Co-founder & CTO", "decision_maker"),
        ("VP Engineering", "decision_maker"),
        ("Vice President, Sales", "decision_maker"),
        ("Head of Operations", "decision_maker"),
        ("Director of Platform", "decision_maker"),
        ("Chief Revenue Officer", "decision_maker"),
        ("Engineering Manager", "manager"),
        ("Team Lead, Payments", "manager"),
        ("Principal Engineer", "manager"),
        ("Software Engineer", "other"),
        ("Headhunter", "other"),  # "head" only as a whole word
        ("Leadership coach", "other"),  # "lead" only as a whole word
        ("Art directory curator", "other"),  # "director" only as a whole word
        ("", "other"),
    ],
)
def test_role_seniority_matches_whole_words_of_the_title(title: str, seniority: str) -> None:
    assert role_seniority(title) == seniority


def test_director_is_not_read_as_cto_inside_the_word() -> None:
    # "direCTOr" contains "cto": only a whole-word match may count, once, as a decision maker.
    score = score_lead(signals(role="Director"), firm(**NO_FIRMOGRAPHIC_FIT))

    assert score.points == 30 + 20


@pytest.mark.parametrize(
    ("role", "points"), [("CFO", 20), ("Product Manager", 10), ("Analyst", 0), ("", 0)]
)
def test_role_points(role: str, points: int) -> None:
    score = score_lead(signals(intent="none", role=role), firm(**NO_FIRMOGRAPHIC_FIT))

    assert score.points == points


# -- firmographics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("employees", "points"),
    [
        (1, 0),
        (49, 0),
        (50, 10),
        (199, 10),
        (200, 20),
        (2_000, 20),
        (2_001, 10),
        (10_000, 10),
        (10_001, 0),
    ],
)
def test_company_size_boundaries(employees: int, points: int) -> None:
    assert firmographic_points(employees=employees) - 30 == points


@pytest.mark.parametrize(
    ("industry", "points"),
    [
        ("software", 15),
        ("Fintech", 15),
        ("e-commerce", 15),
        ("healthcare", 5),
        ("Retail", 5),
        ("mining", 0),
        ("", 0),
    ],
)
def test_industry_points_ignore_case(industry: str, points: int) -> None:
    assert firmographic_points(industry=industry) - 35 == points


@pytest.mark.parametrize(
    ("band", "points"),
    [
        ("<1M", 0),
        ("1M-10M", 5),
        ("10M-50M", 10),
        ("50M-250M", 10),
        ("250M-1B", 5),
        ("1B+", 0),
        ("unknown", 0),
    ],
)
def test_revenue_band_points(band: str, points: int) -> None:
    assert firmographic_points(revenue_band=band) - 40 == points


@pytest.mark.parametrize(("country", "points"), [("US", 5), ("gb", 5), ("PL", 5), ("BR", 0)])
def test_served_country_points(country: str, points: int) -> None:
    assert firmographic_points(country=country) - 45 == points


def test_an_unknown_company_scores_no_firmographic_points_and_cannot_be_high() -> None:
    score = score_lead(signals(), None)

    assert (score.points, score.tier) == (50, "mid")
    assert any("not in the firmographics" in r for r in score.reasons)


def test_the_same_inputs_always_give_the_same_score() -> None:
    assert score_lead(signals(), firm()) == score_lead(signals(), firm())
