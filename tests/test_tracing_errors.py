"""A failing ctx call's span and its slice carry an error status the scrubber has seen (the SDK's
own status on an exception would carry the message as raised), over real OTLP/HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from pipelines import Context, Gatehouse, Sensitive, pipeline, tracing
from tests.fakes.otlp import FakeOTLP

CARD = "4111 1111 1111 1111"


class CardInput(BaseModel):
    card_number: Annotated[str, Sensitive]


def charge(card: str) -> str:
    raise ValueError(f"card {card} declined")


@pipeline("otel_errors_charge", input=CardInput)
def otel_errors_charge(ctx: Context, data: CardInput) -> str:
    return ctx.step("charge", charge, data.card_number)


@pytest.fixture
def traced() -> Iterator[tuple[Any, FakeOTLP]]:
    with FakeOTLP() as otlp:
        provider = tracing.build_tracer_provider(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        )
        assert provider is not None
        tracing.install(provider)
        try:
            yield provider, otlp
        finally:
            tracing.install(None)
            provider.shutdown()


def test_a_failing_steps_span_and_slice_have_an_error_status_without_the_sensitive_value(
    traced: tuple[Any, FakeOTLP], gatehouse: Gatehouse
) -> None:
    provider, otlp = traced
    run = gatehouse.trigger("otel_errors_charge", {"card_number": CARD}, user="carol")
    assert run.status in ("failed", "needs_attention"), run.status
    provider.force_flush()
    (step,) = otlp.named("step charge")
    (piece,) = otlp.named("run otel_errors_charge")
    assert step.parent_span_id == piece.span_id
    assert step.status_code == 2  # STATUS_CODE_ERROR
    message = "StepFailed: step 'charge' failed: ValueError: card [redacted] declined"
    assert step.status_message == message
    assert step.event("exception") == {"exception.type": "StepFailed", "exception.message": message}
    assert piece.status_code == 2
    assert piece.attributes["gatehouse.run.status"] == run.status
    assert CARD.encode() not in otlp.all_bytes()
