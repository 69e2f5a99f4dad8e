"""Console entry point (``learnauthz``, ``python -m app``): the Flask CLI with this app, plus
``learnauthz serve``, the production server (``python -m app.serve``)."""

from __future__ import annotations

import sys

import click
from flask.cli import FlaskGroup

from app import create_app, serve, sidecar
from app.config import ConfigError
from app.startup import EXIT_BAD_SETTING


@click.command("serve")
def serve_cmd() -> None:
    """Run the production server: granian, as ``python -m app.serve`` (SERVE_BIND, SERVE_WORKERS, ...)."""
    sys.exit(serve.main())


def main() -> None:
    """Run the ``flask`` command line with :func:`app.create_app`; a bad setting exits 2 with one line."""
    cli = FlaskGroup(create_app=create_app, help="learnauthz: the service's commands (as `flask`, no --app).")
    cli.add_command(serve_cmd)
    cli.add_command(sidecar.sidecar_cmd)
    try:
        cli()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)


if __name__ == "__main__":
    main()
