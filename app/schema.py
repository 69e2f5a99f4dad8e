"""The database schema's version: the migrations the package carries (``app/migrations``) against
the database's ``alembic_version``. Nothing is served from a database that is not at their head."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from app.config import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE = "run `learnauthz db-upgrade`"
VERSION_TABLE = "alembic_version"


class SchemaError(ConfigError):
    """The database's schema is not the one this release migrates to (one line naming the fix)."""


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the packaged migrations and the database at url."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


def heads() -> tuple[str, ...]:
    """The head revision(s) of the packaged migrations."""
    return tuple(sorted(_scripts().get_heads()))


def check(connection: Connection) -> None:
    """SchemaError unless the database on connection is migrated to :func:`heads`."""
    current: tuple[str, ...] = ()
    if inspect(connection).has_table(VERSION_TABLE):  # alembic's table (read directly: its context logs at INFO)
        current = tuple(sorted(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()))
    head = heads()
    if current == head:
        return
    if not current:
        raise SchemaError(f"the database has no schema (migrations not applied): {UPGRADE}")
    known = {rev.revision for rev in _scripts().walk_revisions()}
    at, want = ", ".join(current), ", ".join(head)
    if set(current) <= known:
        raise SchemaError(f"the database schema is at revision {at}, not {want} (migrations not applied): {UPGRADE}")
    raise SchemaError(
        f"the database schema is at revision {at}, which this release does not know (its head is {want}): "
        "upgrade learnauthz"
    )
