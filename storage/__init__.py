"""Gatehouse storage: SQLAlchemy models, the queries the engine uses, Alembic migrations.

Imports nothing from `pipelines` or `bot`; they import it.
"""
