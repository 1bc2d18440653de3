"""Gatehouse's faces: the CLI now, the Slack bot next. Imports `pipelines`, never the reverse."""
