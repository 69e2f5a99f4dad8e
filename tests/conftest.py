"""Shared fixtures: an app per database backend (SQLite file, real PostgreSQL), clients, resets.

PostgreSQL: one database per test worker, created and migrated once, reset to its imported
baseline before each test. Without a server the PostgreSQL tests skip, except under CI=true,
where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app import create_app

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
# Tables whose rows are demo/test data; policy tables are reset to their baseline instead.
DATA_TABLES = [
    "idempotency_keys",
    "group_members",
    "groups",
    "invitations",
    "memberships",
    "audit_events",
    "outbox_emails",
    "user_sessions",
    "email_changes",
    "service_tokens",
    "workspaces",
    "users",
]


def _pg_reachable() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def require_postgres() -> None:
    """Skip (or fail under CI=true) when PostgreSQL is not reachable."""
    problem = _pg_reachable()
    if problem:
        msg = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); start it with pg_ctlcluster"
        if IN_CI:
            pytest.fail("CI=true requires PostgreSQL: " + msg)
        pytest.skip(msg)


def _upgrade(url: str) -> None:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "test"})
    with app.app_context():
        from app.cli import upgrade_database
        from app.extensions import db

        upgrade_database()
        db.session.remove()
        db.engine.dispose()


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database named ``<prefix>_<random>``; its URL, dropped on exit."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        _upgrade(url)
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def server_process(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    ready: Callable[[subprocess.Popen[bytes]], bool],
    timeout: float = 90,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """cmd (a server) started in cwd with its output in log_path, yielded once ready(process) holds;
    stopped (SIGTERM, then SIGKILL) at exit. Fails if it exits or is not ready within timeout seconds."""
    from bench.http import process

    with process(cmd, env, str(log_path), cwd=str(cwd)) as proc:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{cmd[2:4]} exited with {proc.returncode}; see {log_path}"
            assert time.monotonic() < deadline, f"{cmd[2:4]} not ready; see {log_path}"
            try:
                if ready(proc):
                    break
            except OSError:  # not listening yet (requests' errors are OSErrors too)
                pass
            time.sleep(0.1)
        yield proc


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, policy-imported SQLite file, copied for each test."""
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    _upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> Iterator[tuple[str, int]]:
    """A migrated, policy-imported PostgreSQL database for this worker, dropped at the end."""
    require_postgres()
    name = f"test_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _upgrade(url)
    eng = create_engine(url)
    with eng.begin() as c:
        baseline = int(c.execute(text("select revision from policy_head where id = 1")).scalar() or 0)
        # Snapshots of the imported policy, restored before each test (tests may edit packs).
        c.execute(text("CREATE TABLE baseline_casbin_rule AS SELECT * FROM casbin_rule"))
        c.execute(text("CREATE TABLE baseline_policy_packs AS SELECT * FROM policy_packs"))
    eng.dispose()
    yield url, baseline
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reset_postgres(url: str, baseline: int) -> None:
    """Back to the imported baseline: no data rows, the imported rules and packs, head at the baseline."""
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("TRUNCATE " + ", ".join(DATA_TABLES) + " RESTART IDENTITY CASCADE"))
        c.execute(text("TRUNCATE casbin_rule, policy_packs"))
        c.execute(text("INSERT INTO casbin_rule SELECT * FROM baseline_casbin_rule"))
        c.execute(text("INSERT INTO policy_packs SELECT * FROM baseline_policy_packs"))
        c.execute(text("DELETE FROM policy_revisions WHERE id > :b"), {"b": baseline})
        c.execute(text("UPDATE policy_head SET revision = :b WHERE id = 1"), {"b": baseline})
    eng.dispose()


def make_app(url: str, **extra: Any) -> Flask:
    """A testing app bound to url."""
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "test-secret", "MAIL_BACKEND": "memory"}
    config.update(extra)
    return create_app(config)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrize a test over both databases."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean database of the requested backend, migrated and with the packs imported."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "app.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url, baseline = request.getfixturevalue("pg_database")
    reset_postgres(url, baseline)
    return str(url)


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The app on a clean database, inside an app context."""
    application = make_app(database_url)
    with application.app_context():
        yield application
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def demo(app: Flask) -> Flask:
    """The app with DESIGN.md §6's demo data (fast password hashing)."""
    from tests.factories import fast_password_hashing, seed_demo

    fast_password_hashing()
    seed_demo()
    return app


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """xdist worker id ('master' without xdist)."""
    return str(getattr(request.config, "workerinput", {}).get("workerid", "master"))
