"""What runs on the engine: schedules, the weekly review, alerts and drift, stats, readiness."""
