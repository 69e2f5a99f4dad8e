"""What a production server checks before it starts (``gunicorn.conf.py``, ``python -m app.serve``):
the settings (:func:`app.config.load_config`) and, when the database answers, its schema
(:mod:`app.schema`). A refusal is one line on stderr and exit code 2. A database that does not
answer is no refusal: the server starts unready and loads the policy when it returns."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from app import schema
from app.config import ConfigError, load_config

log = logging.getLogger("app.startup")
EXIT_BAD_SETTING = 2


def check_database(cfg: dict[str, Any]) -> None:
    """SchemaError if the configured database answers and is not at the migrations' head."""
    url = str(cfg["SQLALCHEMY_DATABASE_URI"])
    args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        args["connect_timeout"] = max(2, int(float(cfg["DATABASE_CONNECT_TIMEOUT_SECONDS"])))
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as connection:
            schema.check(connection)
    except SQLAlchemyError as exc:
        log.warning("database not reachable at start (%s): starting unready", type(exc).__name__)
    finally:
        engine.dispose()


def refuse_bad_settings(server: str) -> dict[str, Any]:
    """Check settings and schema as the production server ``server`` (``gunicorn``, ``granian``)
    would run them; on a refusal print ``error: <reason>`` and exit 2. Returns the settings."""
    os.environ.setdefault("SERVER_SOFTWARE", server)  # a production server (app.config)
    try:
        cfg = load_config()
        check_database(cfg)
    except (ConfigError, ValueError) as exc:  # ValueError: a FLASK_* value of the wrong type
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_SETTING) from None
    return cfg
