"""Fakes that speak the real protocols (time here; Slack and OpenAI over HTTP later)."""
