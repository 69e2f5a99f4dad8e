"""``flask token create|revoke|list``: service tokens for the decision API."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.errors import AppError

token_cli = AppGroup("token", help="Service tokens for the decision API.")


@token_cli.command("create")
@click.argument("name")
@click.option("--workspace", default=None, metavar="SLUG", help="default workspace of AuthZEN requests naming none")
def token_create(name: str, workspace: str | None) -> None:
    """Create token NAME and print its secret (shown once; only its SHA-256 is stored)."""
    from app.extensions import db
    from app.services import tokens

    try:
        _, secret = tokens.create_token(db.session(), name, workspace=workspace)
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from exc
    click.echo(secret)


@token_cli.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke token NAME; requests with it are refused from now on."""
    from app.extensions import db
    from app.services import tokens

    try:
        tokens.revoke_token(db.session(), name)
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from exc
    click.echo(f"revoked {name}")


@token_cli.command("list")
def token_list() -> None:
    """List tokens: name, created, last used, revoked (never the secret)."""
    from app.extensions import db
    from app.services import tokens

    rows = tokens.list_tokens(db.session())
    if not rows:
        click.echo("no tokens")
    for t in rows:
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        where = f"\tworkspace {t.workspace}" if t.workspace else ""
        click.echo(f"{t.name}\t{state}\tcreated {t.created_at:%Y-%m-%d %H:%M}\tlast used {used}{where}")
