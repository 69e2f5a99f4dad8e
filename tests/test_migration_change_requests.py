"""The migration of issue 26 (b3c8d1e6f4a9), on SQLite and PostgreSQL: every revision gets a category
backfilled from its kind (policy edits stay "policy", membership data and settings move out of the
policy history), the change-request tables appear, and the downgrade takes it all back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.test_migration_six_values import _alembic, _database

PREVIOUS = "a7d4e2c9b1f3"  # the idempotency keys (issue 23)
KINDS = ["policy-edit", "import", "member", "group", "seed", "user-change", "workspace", "feature", "token-revoke"]
EXPECTED = ["policy", "policy", "membership", "membership", "membership", "membership", "settings", "settings",
            "settings"]  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_revisions_get_a_category_and_change_requests_their_tables(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text("DELETE FROM policy_revisions"))
            for n, kind in enumerate(KINDS, 1):
                c.execute(
                    text("INSERT INTO policy_revisions (id, created_at, kind, message, changes)"
                         " VALUES (:id, '2026-01-01 00:00:00', :kind, 'm', '[]')"),  # fmt: skip
                    {"id": 1000 + n, "kind": kind},
                )
        engine.dispose()

        _alembic(url, "upgrade", "head")
        engine = create_engine(url)
        with engine.connect() as c:
            rows = c.execute(text("SELECT kind, category FROM policy_revisions WHERE id > 1000 ORDER BY id")).all()
            tables = set(inspect(engine).get_table_names())
        engine.dispose()
        assert [tuple(r) for r in rows] == list(zip(KINDS, EXPECTED, strict=True))
        assert {"change_requests", "change_request_events"} <= tables

        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        columns = [col["name"] for col in inspect(engine).get_columns("policy_revisions")]
        tables = set(inspect(engine).get_table_names())
        engine.dispose()
        assert "category" not in columns and "change_requests" not in tables
