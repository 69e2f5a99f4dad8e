"""The migration to the stock adapter's layout (d8a3f5c1e7b2), on SQLite and PostgreSQL, from old-shape data.

A database at the previous head holds the shipped packs the way they were stored before it: 7-value p-rules
(``priority, sub, pack:<id>, act, scope, feature, eft``, the effect in ``v6``), no pack → role links, and a
revision log of such tuples. After the upgrade the table has ``v0..v5`` only, holds exactly what importing
today's ``policy/`` writes (p-rules without the pack, a ``g4, pack:<id>, <role>`` link per role with rules),
the revision log replays to that state, the engine decides on it, and the uniqueness of a rule still holds.
The downgrade restores the old rows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from app.authz import AccessRequest, PolicyEngine, ResourceFacts
from app.authz.packs import load_packs, packset_from_documents
from app.policy import store as policy_store
from tests.conftest import ROOT, fresh_pg_database, make_app

PREVIOUS = "c4f1a7e9d2b6"
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")
OLD = ("ptype", "v0", "v1", "v2", "v3", "v4", "v5", "v6")


def _old(rule: tuple[str, ...]) -> tuple[str, ...]:
    """A rule as it was stored before: the p-rule with its role's pack as third value."""
    if rule[0] == "p":
        return (*rule[:3], f"pack:{rule[2].split(':')[1]}", *rule[3:])
    return rule


def _row(rule: tuple[str, ...], width: int) -> dict[str, str]:
    values = [*rule, *[""] * (width - len(rule))]
    return dict(zip(OLD[:width], values))


FACTS = [
    ("g4", "ws:old-classroom", "pack:classroom"),
    ("g", "user:1", "role:classroom:teacher", "ws:old-classroom"),
    ("g", "user:2", "role:classroom:learner", "ws:old-classroom"),
    ("g2", "user:1", "group:morning", "ws:old-classroom"),
    ("g3", "user:2", "group:morning", "ws:old-classroom"),
    ("g4", "ws:old-sims", "pack:simulations"),
    ("g", "user:3", "role:simulations:reviewer", "ws:old-sims"),
]


@contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / "old.db"
        path.touch()
        url = f"sqlite:///{path}"
        app = make_app(url)
        with app.app_context():
            from app.cli import upgrade_database
            from app.extensions import db

            upgrade_database()  # migrated and policy/ imported, as fresh_pg_database does
            db.session.remove()
            db.engine.dispose()
        yield url
        return
    with fresh_pg_database("test_migration") as url:
        yield url


def _alembic(url: str, direction: str, target: str) -> None:
    from alembic import command

    from app.cli import _alembic_config

    app = make_app(url)
    with app.app_context():
        getattr(command, direction)(_alembic_config(), target)
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()


def _write_old_shape(url: str) -> None:
    """Replace every rule and revision with the old shape of the shipped packs plus some facts."""
    pack_rules = [_old(r) for r in PACKS.all_rules() if not (r[0] == "g4" and r[1].startswith("pack:"))]
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("DELETE FROM casbin_rule"))
        c.execute(text("DELETE FROM policy_revisions"))
        cols = ", ".join(OLD)
        marks = ", ".join(f":{k}" for k in OLD)
        c.execute(text(f"INSERT INTO casbin_rule ({cols}) VALUES ({marks})"), [_row(r, 8) for r in pack_rules])
        c.execute(text(f"INSERT INTO casbin_rule ({cols}) VALUES ({marks})"), [_row(r, 8) for r in FACTS])
        log = [["add", list(r)] for r in pack_rules]
        edit = [["remove", list(_old(next(r for r in PACKS.all_rules() if r[0] == "p")))]]
        edit += [["add", list(_old(next(r for r in PACKS.all_rules() if r[0] == "p")))]]
        revisions = text(
            "INSERT INTO policy_revisions (id, created_at, kind, message, changes) VALUES (:id, :at, :kind, '', :ch)"
        )
        history = [("import", log), ("workspace", [["add", list(FACTS[0])]]), ("policy-edit", edit)]
        for rid, (kind, changes) in enumerate(history, 1):
            c.execute(revisions, {"id": rid, "at": "2026-01-01 00:00:00", "kind": kind, "ch": json.dumps(changes)})
        c.execute(text("UPDATE policy_head SET revision = 3"))
    engine.dispose()


def _state(url: str) -> tuple[list[str], set[tuple[str, ...]], list[list[Any]]]:
    engine = create_engine(url)
    try:
        columns = [col["name"] for col in inspect(engine).get_columns("casbin_rule")]
        names = [c for c in OLD if c in columns]
        with engine.connect() as c:
            rows = {tuple(r) for r in c.execute(text(f"SELECT {', '.join(names)} FROM casbin_rule"))}
            log = [list(r) for r in c.execute(text("SELECT id, changes FROM policy_revisions ORDER BY id"))]
        return columns, rows, log
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_moves_old_shape_data_to_the_stock_layout(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        _alembic(url, "downgrade", PREVIOUS)
        _write_old_shape(url)
        old_columns, old_rows, old_log = _state(url)
        assert old_columns[-1] == "v6"

        _alembic(url, "upgrade", "head")
        columns, rows, log = _state(url)
        assert columns == ["id", "ptype", "v0", "v1", "v2", "v3", "v4", "v5"]  # the stock adapter's table

        def trim(row: tuple[str, ...]) -> tuple[str, ...]:
            width = {"p": 7, "g": 4, "g2": 4, "g3": 4, "g4": 3, "g5": 3}[row[0]]
            return row[:width]

        assert {trim(r) for r in rows} == set(PACKS.all_rules()) | set(FACTS)  # what importing policy/ writes
        assert len(rows) == len(set(PACKS.all_rules()) | set(FACTS))

        # The revision log replays to the same pack rules, in the new shape (links right after their role's rules).
        changes = [json.loads(ch) if isinstance(ch, str) else ch for _, ch in log]
        replayed: list[tuple[str, ...]] = []
        for op, rule in (c for chs in changes[:1] for c in chs):
            assert op == "add" and (rule[0] != "p" or len(rule) == 7)
            replayed.append(tuple(rule))
        assert set(replayed) == set(PACKS.all_rules())
        for rule in replayed:
            if rule[0] == "p":
                assert ("g4", f"pack:{rule[2].split(':')[1]}", rule[2]) in replayed[: replayed.index(rule) + 2]
        assert changes[2][0][1] == changes[2][1][1] and len(changes[2][0][1]) == 7  # the edit: a p tuple rewritten
        assert changes[1] == [["add", list(FACTS[0])]]
        assert len(old_log) == len(log)

        # The live state loads into the engine and decides: pack → role links give the rules their effect.
        app = make_app(url)
        with app.app_context():
            from app.extensions import db

            revision, documents, pack_rules, facts = policy_store.read_policy(db.session())
            packset = packset_from_documents(documents, pack_rules, PACKS.model_text)
            engine = PolicyEngine(packset, facts, revision)
            db.session.remove()
            db.engine.dispose()
        teach = ResourceFacts(group="group:morning", member="user:2")
        assert engine.check(AccessRequest("user:1", "ws:old-classroom", teach, "manage_group_learners")).allowed
        assert not engine.check(AccessRequest("user:2", "ws:old-classroom", teach, "manage_group_learners")).allowed
        assert engine.check(AccessRequest("user:3", "ws:old-sims", ResourceFacts(), "view_dashboard")).allowed

        # A rule is still unique (the constraint was rebuilt over v0..v5).
        p = next(r for r in PACKS.all_rules() if r[0] == "p")
        db_engine = create_engine(url)
        try:
            with pytest.raises(IntegrityError), db_engine.begin() as c:
                c.execute(
                    text("INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4, v5) VALUES (:a, :b, :c, :d, :e, :f, :g)"),
                    dict(zip("abcdefg", p)),
                )
        finally:
            db_engine.dispose()

        # Downgrade: the old rows and log come back (ids aside).
        _alembic(url, "downgrade", PREVIOUS)
        _, back_rows, back_log = _state(url)
        assert back_rows == old_rows
        assert [[rid, json.loads(ch) if isinstance(ch, str) else ch] for rid, ch in back_log] == [
            [rid, json.loads(ch) if isinstance(ch, str) else ch] for rid, ch in old_log
        ]
        _alembic(url, "upgrade", "head")


def test_sqlite_template_is_at_head(tmp_path: Path, sqlite_template: Path) -> None:
    """The suite's template database went through the migration (nothing to shift: it was imported new)."""
    path = tmp_path / "copy.db"
    shutil.copy(sqlite_template, path)
    columns, rows, _ = _state(f"sqlite:///{path}")
    assert "v6" not in columns
    assert {r[:3] for r in rows if r[0] == "g4" and r[1].startswith("pack:")} >= {
        ("g4", "pack:classroom", "role:classroom:learner")
    }
