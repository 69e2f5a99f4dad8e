"""Console entry point (``learnauthz``, ``python -m app``): the Flask CLI with this app."""

from __future__ import annotations

from flask.cli import FlaskGroup

from app import create_app


def main() -> None:
    """Run the ``flask`` command line with :func:`app.create_app`."""
    FlaskGroup(create_app=create_app)()


if __name__ == "__main__":
    main()
