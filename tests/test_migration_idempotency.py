"""The idempotency_keys migration (a7d4e2c9b1f3), on SQLite and PostgreSQL: the upgrade creates the
table the model maps (one key per caller), the downgrade drops it and leaves the rest alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from app.models import IdempotencyKey
from tests.test_migration_six_values import _alembic, _database

PREVIOUS = "f1a9c3e5b7d2"
THIS = "a7d4e2c9b1f3"
ROW = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, method, path, owner, lease_until, content_type,"
    " location, created_at, expires_at) VALUES ('user:1', 'k', 'f', 'POST', '/api/x', 'o',"
    " '2026-01-01 00:00:00', '', '', '2026-01-01 00:00:00', '2026-01-02 00:00:00')"
)


def _tables(url: str) -> tuple[set[str], dict[str, set[str]]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        names = set(found.get_table_names())
        columns = {t: {c["name"] for c in found.get_columns(t)} for t in names if t == "idempotency_keys"}
        return names, columns
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_idempotency_keys_created_and_dropped(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        names, columns = _tables(url)
        assert "idempotency_keys" in names
        assert columns["idempotency_keys"] == set(IdempotencyKey.__table__.columns.keys())
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text(ROW))
        with pytest.raises(IntegrityError), engine.begin() as c:
            c.execute(text(ROW))  # one row per (scope, key)
        engine.dispose()

        _alembic(url, "downgrade", THIS)  # later migrations (their tables) first
        at_this, _ = _tables(url)
        assert "idempotency_keys" in at_this
        _alembic(url, "downgrade", PREVIOUS)
        without, _ = _tables(url)
        assert without == at_this - {"idempotency_keys"}

        _alembic(url, "upgrade", "head")
        again, columns = _tables(url)
        assert again == names and columns["idempotency_keys"] == set(IdempotencyKey.__table__.columns.keys())
