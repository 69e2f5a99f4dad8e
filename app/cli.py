"""Every ``flask …`` (= ``learnauthz …``) command, one group per concern: ``db-upgrade``,
``db-revision``, ``seed``, ``policy …``, ``token …``, ``outbox send`` (``learnauthz serve``:
``app/__main__.py``). Commands that use the database refuse one whose schema is not at the head
(``app.schema``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from alembic.config import Config
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from app import notifications, schema
from app.authz import delegation
from app.authz.matrix import matrix_markdown
from app.authz.packs import format_rule, load_packs
from app.authz.policytest import load_suite, run_suite, suite_files
from app.authz.selection import SLOTS, slot_map
from app.database import in_transaction
from app.errors import AppError, ValidationError
from app.extensions import db
from app.policy import files as policy_files
from app.policy import store as policy_store
from app.policy import tokens
from app.policy.files import file_packs

policy_cli = AppGroup("policy", help="Policy packs: test, verify, matrix, import, export, diff.")
token_cli = AppGroup("token", help="Service tokens for the decision API.")
outbox_cli = AppGroup("outbox", help="Queued emails.")
partitions_cli = AppGroup("partitions", help="Partitioned decision tiers: HAProxy's slot map.")


def _alembic_config() -> Config:
    return schema.alembic_config(current_app.config["SQLALCHEMY_DATABASE_URI"])


def _require_schema() -> None:
    """Refuse (SchemaError: one line, ``learnauthz`` exits 2) a database not migrated to the head."""
    with db.engine.connect() as connection:
        schema.check(connection)


def upgrade_database() -> int:
    """Apply migrations, then import ``policy/`` if the database holds no packs; returns the revision."""
    from alembic import command


    command.upgrade(_alembic_config(), "head")
    if not policy_store.load_documents(db.session()):
        with in_transaction(db.session()):
            policy_files.import_files(
                db.session(),
                file_packs(),
                message="initial import of policy/",
                policy_dir=current_app.config["POLICY_DIR"],
            )
    return policy_store.current_revision(db.session())


@click.command("db-upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Migrate the database to the latest schema and import the policy packs if missing."""
    rev = upgrade_database()
    click.echo(f"database at head; policy revision {rev}")


@click.command("db-revision")
@click.option("-m", "--message", required=True)
@with_appcontext
def db_revision(message: str) -> None:
    """Autogenerate a migration from the models (developers)."""
    from alembic import command

    command.revision(_alembic_config(), message=message, autogenerate=True)


FIXTURES = ["demo", "authzen-todo", "authzen-cert", "authzen-search"]


@click.command("seed")
@click.argument("fixture", required=False, default="demo", type=click.Choice(FIXTURES))
@with_appcontext
def seed_cmd(fixture: str) -> None:
    """Load the demo data (DESIGN.md §6), or an AuthZEN interop FIXTURE, into the database; safe to run twice."""
    _require_schema()
    if fixture == "demo":
        from seed.demo import load_demo

        click.echo(load_demo())
        return
    from seed.authzen import load_fixture

    click.echo(load_fixture(fixture))


@policy_cli.command("test")
@click.option("--dir", "policy_dir", default=None, help="policy directory (default: the app's)")
@click.option("-v", "--verbose", is_flag=True)
def policy_test(policy_dir: str | None, verbose: bool) -> None:
    """Run policy/tests/*_test.yaml against model.conf + the packs; ends with 'N passed, M failed'."""

    pdir = Path(policy_dir or current_app.config["POLICY_DIR"])
    packset = load_packs(pdir, current_app.config["MODEL_PATH"])
    passed = failed = 0
    for path in suite_files(pdir):
        for res in run_suite(packset, load_suite(path)):
            if res.passed:
                passed += 1
                if verbose:
                    click.echo(f"ok   {res.case.id}")
            else:
                failed += 1
                click.echo(
                    f"FAIL {res.case.id}: expected {res.case.expect} {res.case.reason}".rstrip()
                    + f", got {res.got} ({res.got_reason})"
                )
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@policy_cli.command("matrix")
@click.argument("pack")
def policy_matrix(pack: str) -> None:
    """Print PACK's role × action table, computed by the engine, as Markdown."""

    packset = file_packs()
    if pack not in packset.packs:
        raise click.BadParameter(f"unknown pack {pack!r}; packs: {', '.join(sorted(packset.packs))}")
    click.echo(matrix_markdown(packset, pack))


@policy_cli.command("import")
def policy_import() -> None:
    """Make the database equal to policy/ files, as one revision (refused if they fail verification)."""
    _require_schema()

    try:
        with in_transaction(db.session()):
            rev = policy_files.import_files(db.session(), file_packs(), policy_dir=current_app.config["POLICY_DIR"])
    except ValidationError as exc:
        click.echo(f"error: {exc}", err=True)
        for problem in exc.extra.get("problems", []):
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    click.echo(f"imported as revision {rev}" if rev else "nothing to import: database equals policy/")


@policy_cli.command("verify")
@click.argument("pack", required=False)
@click.option("--dir", "policy_dir", default=None, help="policy directory (default: the app's)")
def policy_verify(pack: str | None, policy_dir: str | None) -> None:
    """The escalation verifier: per pack, who may grant what, then PASS or counterexamples (exit 1)."""

    packset = load_packs(Path(policy_dir or current_app.config["POLICY_DIR"]), current_app.config["MODEL_PATH"])
    if pack is not None and pack not in packset.packs:
        raise click.BadParameter(f"unknown pack {pack!r}; packs: {', '.join(sorted(packset.packs))}")
    reports = delegation.verify(packset, [pack] if pack else None)
    click.echo(delegation.render(packset, reports), nl=False)
    failed = [r.pack for r in reports if not r.ok]
    click.echo(f"{len(reports) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)


@policy_cli.command("export")
def policy_export() -> None:
    """Write the database's packs to policy/ files."""
    _require_schema()

    written = policy_files.export_files(db.session(), Path(current_app.config["POLICY_DIR"]))
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo("nothing to export: policy/ equals the database")


@policy_cli.command("diff")
def policy_diff() -> None:
    """Show rules that differ between policy/ files (+) and the database (-); exit 1 if any."""
    _require_schema()

    differs = False
    for d in policy_files.diff(db.session(), file_packs()):
        if d.empty:
            continue
        differs = True
        click.echo(f"--- database/{d.pack}\n+++ policy/{d.pack}")
        if d.document_differs:
            click.echo(f"~ {d.pack}.yaml document differs")
        for r in d.only_in_db:
            click.echo(f"- {format_rule(r)}")
        for r in d.only_in_files:
            click.echo(f"+ {format_rule(r)}")
    if not differs:
        click.echo("no differences")
    else:
        sys.exit(1)


# -- service tokens ---------------------------------------------------------------------------------
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
@click.option(
    "--feed", is_flag=True, help="may also follow the change feed (GET /v1/snapshot, /v1/changes) within its binding"
)
def token_create(
    name: str, workspaces: tuple[str, ...], platform: str | None, all_workspaces: bool, feed: bool
) -> None:
    """Create token NAME bound to what it may ask about, and print its secret (shown once; only its SHA-256 is stored).

    Exactly one of --workspace (repeatable), --platform or --all-workspaces: a token asking about
    anything else gets a 403 problem. Only a token naming the service meta-pack (--workspace service,
    --platform service) reaches it.
    """
    _require_schema()

    try:
        with in_transaction(db.session()):
            _, secret = tokens.create_token(
                db.session(), name, workspaces=workspaces, platform=platform, all_workspaces=all_workspaces, feed=feed
            )
    except AppError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(secret)


@token_cli.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke token NAME; requests with it are refused from now on."""
    _require_schema()

    try:
        with in_transaction(db.session()):
            tokens.revoke_token(db.session(), name)
    except AppError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"revoked {name}")


@token_cli.command("list")
def token_list() -> None:
    """List tokens: name, state, created, last used, binding (never the secret); migrated tokens are flagged."""
    _require_schema()

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


# -- outbox ---------------------------------------------------------------------------------------
@outbox_cli.command("send")
def outbox_send() -> None:
    """Deliver queued emails with the configured MAIL_BACKEND."""
    _require_schema()
    sent = notifications.dispatch(db.session(), limit=10_000)
    click.echo(f"sent {sent} email(s)")


# -- partitions ------------------------------------------------------------------------------------
@partitions_cli.command("map")
@click.argument("count", type=click.IntRange(1, SLOTS))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="file to write (default: standard output)")
def partitions_map(count: int, output: str | None) -> None:
    """Write the slot → partition table of COUNT partitions for HAProxy's map_int (slots.map)."""
    table = slot_map(count)
    if output is None:
        click.echo(table, nl=False)
        return
    Path(output).write_text(table, encoding="utf-8")
    click.echo(f"{output}: {SLOTS} slots over {count} partitions")


def register_cli(app: Flask) -> None:
    """Attach every command to the app."""
    app.cli.add_command(db_upgrade)
    app.cli.add_command(db_revision)
    app.cli.add_command(seed_cmd)
    app.cli.add_command(policy_cli)
    app.cli.add_command(token_cli)
    app.cli.add_command(outbox_cli)
    app.cli.add_command(partitions_cli)
