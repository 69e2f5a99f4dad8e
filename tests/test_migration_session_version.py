"""The migration that drops the dead users.session_version column (f1a9c3e5b7d2), on SQLite and
PostgreSQL: users survive it, the model no longer maps the column, the downgrade brings it back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from app.models import User
from tests.test_migration_six_values import _alembic, _database

PREVIOUS = "e5c2b8d4a1f7"


def _users(url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        columns = [c["name"] for c in inspect(engine).get_columns("users")]
        with engine.connect() as c:
            rows = [tuple(r) for r in c.execute(text("SELECT id, email FROM users ORDER BY id"))]
        return columns, rows
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_session_version_is_dropped_and_restored(backend: str, tmp_path: Path) -> None:
    assert "session_version" not in User.__table__.columns
    with _database(backend, tmp_path) as url:
        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text("INSERT INTO users (email, display_name, password_hash, active, session_version, created_at)"
                           " VALUES ('a@example.org', 'A', '!', true, 3, '2026-01-01 00:00:00')"))  # fmt: skip
        engine.dispose()
        columns, before = _users(url)
        assert "session_version" in columns

        _alembic(url, "upgrade", "head")
        columns, after = _users(url)
        assert "session_version" not in columns and after == before

        _alembic(url, "downgrade", PREVIOUS)
        columns, again = _users(url)
        assert "session_version" in columns and again == before
