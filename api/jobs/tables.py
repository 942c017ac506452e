"""The declarative base that every table of the job database shares (`Base.metadata` is what
the Alembic revisions must equal, see tests/test_migrations.py)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of the jobs schema."""
