"""End-to-end tests: a person's journeys through the Slack sandbox page, in headless Chromium."""
