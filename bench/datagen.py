"""The benchmark data set in PostgreSQL: W workspaces × 10 members of every pack, via COPY.

One database per size (``<BENCH_DB_PREFIX>w<W>``, default ``bench_w<W>``; ``…w<W>u<N>`` for a data set
with N users instead of the default 20,000, e.g. as many users as memberships), created, migrated and
imported like production
(``upgrade_database``), then the facts are streamed in with ``COPY FROM STDIN`` behind a
progress bar and logged as one revision. Users for the HTTP benchmark (the decision API resolves
subjects in the users table) and a service token are added. A database that already holds the
same data set is reused.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from tqdm import tqdm

from app import create_app
from app.authz.packs import load_packs
from bench.world import iter_world

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBERS = 10
HTTP_USERS = int(os.environ.get("BENCH_USERS", "20000"))  # users 1..N in the users table (20,000: 2,000 workspaces)
SEED = 1
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench_")  # databases are <prefix>w<W>


def db_url(name: str) -> str:
    """SQLAlchemy URL of a database on the benchmark server."""
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _exists(name: str) -> bool:
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _marker(url: str) -> dict[str, Any] | None:
    try:
        with psycopg.connect(_libpq(url)) as c:
            row = c.execute("SELECT workspaces, members, seed, rules, token FROM bench_meta").fetchone()
            users = c.execute("SELECT count(*) FROM users").fetchone()
    except psycopg.Error:
        return None
    if row is None or users is None:
        return None
    return {
        "workspaces": row[0],
        "members": row[1],
        "seed": row[2],
        "rules": row[3],
        "token": row[4],
        "users": users[0],
    }


def user_count(workspaces: int, users: int | None = None) -> int:
    """Users 1..N of a data set: ``users`` (capped at the memberships), by default ``HTTP_USERS``."""
    return min(HTTP_USERS if users is None else users, workspaces * MEMBERS)


def database_name(workspaces: int, users: int | None = None) -> str:
    """``<prefix>w<W>``, or ``<prefix>w<W>u<users>`` for a data set with another user count."""
    return f"{DB_PREFIX}w{workspaces}" + ("" if users is None else f"u{users}")


def _upgrade(url: str) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "MAIL_BACKEND": "memory"})
    with app.app_context():
        from app.cli import upgrade_database
        from app.extensions import db

        upgrade_database()
        db.session.remove()
        db.engine.dispose()


def external_id(uid: int) -> str | None:
    """Every other user has an external id (an SSO subject), as a real directory would."""
    return f"sso|{uid:012d}" if uid % 2 == 0 else None


def ensure_database(workspaces: int, users: int | None = None, fresh: bool = False) -> tuple[str, dict[str, Any]]:
    """(url, metadata) of the data set for W workspaces, created if missing.

    ``users``: how many users exist (ids 1..N, email ``u<id>@bench.example``); None keeps the
    default of ``HTTP_USERS`` (20,000), ``users=W*10`` gives every membership its user.
    """
    name = database_name(workspaces, users)
    url = db_url(name)
    n_users = user_count(workspaces, users)
    if not fresh and _exists(name):
        meta = _marker(url)
        if (
            meta
            and meta["workspaces"] == workspaces
            and meta["members"] == MEMBERS
            and meta["seed"] == SEED
            and meta["users"] == n_users
        ):
            _upgrade(url)  # a data set made before a migration gets it, like production
            return url, meta
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "MAIL_BACKEND": "memory"})
    with app.app_context():
        from app.cli import upgrade_database
        from app.extensions import db
        from app.policy import tokens

        upgrade_database()
        _, token = tokens.create_token(db.session(), "bench", all_workspaces=True)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    packset = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    expected = workspaces * (MEMBERS + 1) + workspaces * MEMBERS // 2
    rules = 0
    with psycopg.connect(_libpq(url)) as c:
        with c.cursor() as cur, cur.copy("COPY casbin_rule (ptype, v0, v1, v2, v3, v4, v5) FROM STDIN") as copy:
            bar = tqdm(total=expected, unit="rule", desc=f"W={workspaces:,} facts", unit_scale=True, leave=True)
            for rule in iter_world(packset, workspaces, MEMBERS, SEED):
                copy.write_row((rule[0], rule[1], rule[2], rule[3] if len(rule) > 3 else "", "", "", ""))
                rules += 1
                if rules % 10_000 == 0:
                    bar.update(10_000)
            bar.update(rules % 10_000)
            bar.close()
        head = c.execute("UPDATE policy_head SET revision = revision + 1 WHERE id = 1 RETURNING revision").fetchone()
        assert head is not None
        c.execute(
            "INSERT INTO policy_revisions (id, created_at, kind, message, changes) VALUES (%s, now(), %s, %s, %s)",
            (head[0], "bench", f"bulk load of {rules} facts", "[]"),
        )
        with (
            c.cursor() as cur,
            cur.copy(
                "COPY users (id, email, external_id, display_name, password_hash, active, created_at) FROM STDIN"
            ) as copy,
        ):
            for uid in range(1, n_users + 1):
                ext = external_id(uid) if n_users > 20_000 else None
                copy.write_row((uid, f"u{uid}@bench.example", ext, f"U{uid}", "!", True, "2026-01-01T00:00:00Z"))
        c.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (n_users + 1,))
        c.execute("CREATE TABLE bench_meta (workspaces int, members int, seed int, rules int, token text)")
        c.execute("INSERT INTO bench_meta VALUES (%s, %s, %s, %s, %s)", (workspaces, MEMBERS, SEED, rules, token))
        c.execute("ANALYZE")
    meta = _marker(url)
    assert meta is not None
    return url, meta


def drop_database(workspaces: int, users: int | None = None) -> None:
    """Remove a data set."""
    eng = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{database_name(workspaces, users)}" WITH (FORCE)'))
    eng.dispose()
