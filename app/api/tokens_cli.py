"""``flask token create|revoke|list``: service tokens for the decision API."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.errors import AppError

token_cli = AppGroup("token", help="Service tokens for the decision API.")


@token_cli.command("create")
@click.argument("name")
@click.option(
    "--workspace",
    "workspaces",
    multiple=True,
    metavar="SLUG",
    help="a workspace the token may ask about (repeatable); with one, AuthZEN requests naming none decide there",
)
@click.option(
    "--platform", default=None, metavar="PACK", help="the pack's platform domain and every workspace of the pack"
)
@click.option(
    "--all-workspaces", is_flag=True, help="every workspace and platform domain except the service meta-pack's"
)
def token_create(name: str, workspaces: tuple[str, ...], platform: str | None, all_workspaces: bool) -> None:
    """Create token NAME bound to what it may ask about, and print its secret (shown once; only its SHA-256 is stored).

    Exactly one of --workspace (repeatable), --platform or --all-workspaces: a token asking about
    anything else gets a 403 problem. Only a token naming the service meta-pack (--workspace service,
    --platform service) reaches it.
    """
    from app.extensions import db
    from app.policy import tokens

    try:
        _, secret = tokens.create_token(
            db.session(), name, workspaces=workspaces, platform=platform, all_workspaces=all_workspaces
        )
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
    from app.policy import tokens

    try:
        tokens.revoke_token(db.session(), name)
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from exc
    click.echo(f"revoked {name}")


@token_cli.command("list")
def token_list() -> None:
    """List tokens: name, state, created, last used, binding (never the secret); migrated tokens are flagged."""
    from app.extensions import db
    from app.policy import tokens

    rows = tokens.list_tokens(db.session())
    if not rows:
        click.echo("no tokens")
    for t in rows:
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        where = f"\tdefault workspace {t.workspace}" if t.workspace else ""
        bound = tokens.describe_binding(t)
        click.echo(
            f"{t.name}\t{state}\tcreated {t.created_at:%Y-%m-%d %H:%M}\tlast used {used}\tbound to {bound}{where}"
        )
