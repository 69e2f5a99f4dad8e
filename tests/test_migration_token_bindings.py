"""The migration that binds existing service tokens (e5c2b8d4a1f7), on SQLite and PostgreSQL.

A token with a default workspace becomes bound to it; one without becomes an explicit all-workspaces
token (never the service meta-pack); both are flagged as migrated. The downgrade drops the columns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from app.policy import tokens
from tests.conftest import make_app
from tests.test_migration_six_values import _alembic, _database

PREVIOUS = "d8a3f5c1e7b2"


def _tokens(url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        columns = [c["name"] for c in inspect(engine).get_columns("service_tokens")]
        wanted = [c for c in ("name", "workspace", "binding", "migrated") if c in columns]
        with engine.connect() as c:
            rows = [tuple(r) for r in c.execute(text(f"SELECT {', '.join(wanted)} FROM service_tokens ORDER BY id"))]
        return columns, rows
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_existing_tokens_are_bound_safely(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        _alembic(url, "downgrade", PREVIOUS)
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text("INSERT INTO workspaces (slug, name, pack, settings, created_at) VALUES "
                           "('old-classroom', 'Old', 'classroom', '{}', '2026-01-01 00:00:00')"))  # fmt: skip
            insert = text(
                "INSERT INTO service_tokens (name, token_hash, created_at, workspace) VALUES (:n, :h, :at, :ws)"
            )
            for name, ws in (("gateway", "old-classroom"), ("billing", None)):
                secret = f"lat_{name}-secret"
                c.execute(insert, {"n": name, "h": tokens.hash_token(secret), "at": "2026-01-01 00:00:00", "ws": ws})
        engine.dispose()
        before, _ = _tokens(url)
        assert "binding" not in before

        _alembic(url, "upgrade", "head")
        _, rows = _tokens(url)
        assert [(n, w, b, bool(m)) for n, w, b, m in rows] == [
            ("gateway", "old-classroom", "ws:old-classroom", True),
            ("billing", None, "*", True),
        ]
        app = make_app(url)
        with app.app_context():
            from app.extensions import db

            gateway = tokens.authenticate(db.session(), "lat_gateway-secret")
            billing = tokens.authenticate(db.session(), "lat_billing-secret")
            assert gateway is not None and billing is not None
            assert gateway.may_ask("ws:old-classroom", "classroom") and not gateway.may_ask("ws:other", "classroom")
            assert billing.may_ask("ws:other", "classroom") and not billing.may_ask("ws:service", "service")
            listed = app.test_cli_runner().invoke(args=["token", "list"]).output
            assert "bound to workspaces old-classroom [migrated]" in listed
            assert "bound to all workspaces (not service) [migrated]" in listed
            db.session.remove()
            db.engine.dispose()

        _alembic(url, "downgrade", PREVIOUS)
        columns, rows = _tokens(url)
        assert "binding" not in columns and "migrated" not in columns
        assert rows == [("gateway", "old-classroom"), ("billing", None)]
        _alembic(url, "upgrade", "head")
