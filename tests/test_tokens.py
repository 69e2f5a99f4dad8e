"""Service tokens: shown once, stored as SHA-256, revocable; the `flask token` commands."""

from __future__ import annotations

import pytest
from flask import Flask

from app.errors import ConflictError, NotFoundError, ValidationError
from app.extensions import db
from app.models import ServiceToken
from app.policy import tokens


def test_token_is_stored_hashed_and_authenticates(app: Flask) -> None:
    row, secret = tokens.create_token(db.session(), "svc", all_workspaces=True)
    db.session.commit()
    assert secret.startswith("lat_") and len(secret) > 40
    stored = db.session.get(ServiceToken, row.id)
    assert stored is not None and stored.token_hash == tokens.hash_token(secret) and secret not in stored.token_hash
    assert tokens.authenticate(db.session(), secret) is not None
    # The create put the token in this process's cache: the request wrote nothing; the listener's
    # next sync writes last_used_at, once a minute at most.
    db.session.refresh(stored)
    assert stored.last_used_at is None
    runtime = app.extensions["authz"]
    assert runtime.touch_tokens() == 1
    db.session.refresh(stored)
    assert stored.last_used_at is not None
    assert tokens.authenticate(db.session(), secret) is not None
    assert runtime.touch_tokens() == 0  # written less than a minute ago
    assert tokens.authenticate(db.session(), secret + "x") is None
    assert tokens.authenticate(db.session(), "not-a-token") is None
    tokens.revoke_token(db.session(), "svc")
    db.session.commit()
    assert tokens.authenticate(db.session(), secret) is None


def test_a_token_created_and_revoked_in_one_transaction_is_refused(app: Flask) -> None:
    """The commit puts the created token in the cache and drops the revoked one: in that order."""
    _, secret = tokens.create_token(db.session(), "brief", all_workspaces=True)
    tokens.revoke_token(db.session(), "brief")
    db.session.commit()
    cache = tokens.cache()
    assert cache is not None and cache.get(tokens.hash_token(secret)) is None
    assert tokens.authenticate(db.session(), secret) is None


def test_token_errors(app: Flask) -> None:
    tokens.create_token(db.session(), "svc", all_workspaces=True)
    db.session.commit()
    with pytest.raises(ConflictError):
        tokens.create_token(db.session(), "svc", all_workspaces=True)
    with pytest.raises(ValidationError):
        tokens.create_token(db.session(), "bad name", all_workspaces=True)
    with pytest.raises(NotFoundError):
        tokens.revoke_token(db.session(), "nope")


def test_token_cli(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["token", "create", "billing", "--all-workspaces"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert secret.startswith("lat_") and tokens.authenticate(db.session(), secret) is not None
    result = runner.invoke(args=["token", "create", "billing", "--all-workspaces"])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(args=["token", "list"])
    assert "billing\tactive" in result.output and secret not in result.output
    result = runner.invoke(args=["token", "revoke", "billing"])
    assert result.exit_code == 0 and "revoked billing" in result.output
    assert "billing\trevoked" in runner.invoke(args=["token", "list"]).output
    assert tokens.authenticate(db.session(), secret) is None
    assert runner.invoke(args=["token", "revoke", "nope"]).exit_code != 0


def test_the_token_hash_is_sha256_hex_for_any_secret() -> None:
    """hash_token (CPython's own SHA-256 where it has one) gives what the database stores: hashlib's
    SHA-256 hex digest of the UTF-8 secret, for random secrets of every length and alphabet."""
    import hashlib
    import random

    rnd = random.Random(25)
    alphabet = "abcXYZ019_-é😀\u0000"
    for n in [0, 1, 55, 56, 63, 64, 65, 200, *(rnd.randrange(300) for _ in range(300))]:
        secret = "".join(rnd.choice(alphabet) for _ in range(n))
        assert tokens.hash_token(secret) == hashlib.sha256(secret.encode("utf-8")).hexdigest()
