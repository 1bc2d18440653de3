"""Connectors the shipped pipelines use to reach the outside world."""
