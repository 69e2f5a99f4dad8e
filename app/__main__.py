"""Console entry point (``learnauthz``, ``python -m app``): the Flask CLI with this app."""

from __future__ import annotations

import sys

from flask.cli import FlaskGroup

from app import create_app
from app.config import ConfigError


def main() -> None:
    """Run the ``flask`` command line with :func:`app.create_app`; a bad setting exits 2 with one line."""
    try:
        FlaskGroup(create_app=create_app)()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
