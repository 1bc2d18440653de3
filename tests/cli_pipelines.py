"""Test-only pipelines for tests/test_cli.py, loaded through GATEHOUSE_PIPELINES.

Names start with `cli_` because the pipeline registry is global to the test process.
"""

from __future__ import annotations

import os
import signal

from pydantic import BaseModel, Field

from pipelines import Context, pipeline

SELF_SIGNAL_ENV = "GATEHOUSE_CLI_TEST_SELF_SIGNAL"


class CliQuestion(BaseModel):
    text: str = Field(min_length=1)


class CliVerdict(BaseModel):
    approved: bool
    note: str = Field(min_length=1)


class CliNothing(BaseModel):
    pass


@pipeline("cli_review", input=CliQuestion)
def cli_review(ctx: Context, question: CliQuestion) -> CliVerdict:
    """Ask a finance lead whether a text is fine."""
    return ctx.ask_human(
        "review", f"Is {question.text!r} fine?", output=CliVerdict, assignees=["@finance-leads"]
    )


def send_sigterm_to_self() -> bool:
    # Only inside the worker subprocess of the signal test: never signal the pytest process.
    if os.environ.get(SELF_SIGNAL_ENV) != "1":
        return False
    os.kill(os.getpid(), signal.SIGTERM)
    return True


def finished() -> str:
    return "finished"


@pipeline("cli_signals_itself", input=CliNothing)
def cli_signals_itself(ctx: Context, _: CliNothing) -> str:
    """SIGTERM its own worker in the middle of the run, then carry on."""
    ctx.step("send_sigterm", send_sigterm_to_self)
    return ctx.step("after_signal", finished)
