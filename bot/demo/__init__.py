"""`make demo`: the example pipelines in a local Slack, with days of history made by the real engine."""
