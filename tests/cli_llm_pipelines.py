"""A pipeline with one LLM step, for the CLI's view of LLM calls."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines import Context, pipeline


class Note(BaseModel):
    text: str


class Sentiment(BaseModel):
    mood: str
    confidence: float = Field(ge=0, le=1)


@pipeline("cli_llm_mood", input=Note)
def cli_llm_mood(ctx: Context, note: Note) -> Sentiment:
    """Reads the mood of a note."""
    return ctx.llm("mood", task="classify", prompt=note.text, output=Sentiment, min_confidence=0.6)
