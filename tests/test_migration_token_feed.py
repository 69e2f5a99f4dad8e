"""The migration of issue 27 (c4e9a2f7d1b5), on SQLite and PostgreSQL: service_tokens.feed appears,
false for every existing token (least privilege: the feed is granted explicitly), and goes on downgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.test_migration_six_values import _alembic, _database

PREVIOUS = "b3c8d1e6f4a9"  # revision categories and change requests (issue 26)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_existing_tokens_do_not_get_the_feed(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(
                text("INSERT INTO service_tokens (name, token_hash, created_at, binding, migrated)"
                     " VALUES ('old', :h, '2026-01-01 00:00:00', '*', false)"),  # fmt: skip
                {"h": "a" * 64},
            )
        engine.dispose()

        _alembic(url, "upgrade", "head")
        engine = create_engine(url)
        with engine.connect() as c:
            assert c.execute(text("SELECT feed FROM service_tokens WHERE name = 'old'")).scalar() in (False, 0)
        engine.dispose()

        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        columns = [col["name"] for col in inspect(engine).get_columns("service_tokens")]
        engine.dispose()
        assert "feed" not in columns
