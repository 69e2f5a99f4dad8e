"""Configuration: defaults, then FLASK_-prefixed environment variables, then the test config."""

from __future__ import annotations

import copy
import os
import secrets
from importlib.resources import files
from pathlib import Path
from typing import Any

from flask import Config
from flask.helpers import get_debug_flag
from flask.sansio.scaffold import find_package
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.authz.selection import Selection

ROOT = Path(__file__).resolve().parent.parent
# The model and the policy packs the package carries: app/_data links to the checkout's model.conf
# and policy/ (the one copy; the wheel holds their contents), so both resolve alike when installed.
DATA = Path(str(files("app").joinpath("_data")))
# Flask's instance folder for this package: <checkout>/instance, or <prefix>/var/app-instance installed.
_prefix, _package_path = find_package("app")
INSTANCE = Path(_prefix, "var", "app-instance") if _prefix is not None else Path(_package_path, "instance")

DEFAULTS: dict[str, Any] = {
    # production | development: development (or Flask's debug mode, FLASK_DEBUG=1) accepts a short SECRET_KEY.
    "APP_ENV": "production",
    "SECRET_KEY": None,
    "SQLALCHEMY_DATABASE_URI": None,
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    # Bounded database waits (app.database): a stalled or dead database is answered 503, never a hung worker.
    "DATABASE_CONNECT_TIMEOUT_SECONDS": 2.0,  # libpq connect_timeout (whole seconds, at least 2)
    "DATABASE_POOL_TIMEOUT_SECONDS": 1.0,  # waiting for a free pooled connection
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": 30.0,  # PostgreSQL statement_timeout (0: none)
    "POLICY_LOAD_STATEMENT_TIMEOUT_SECONDS": 600.0,  # statement_timeout of a full policy load (0: none)
    "DATABASE_REQUEST_WAIT_SECONDS": 2.0,  # client-side deadline of one server round trip in a request
    "DATABASE_WAIT_SECONDS": 60.0,  # the same outside requests (policy listener, engine loads in threads, CLI)
    "DATABASE_RETRY_SECONDS": 1.0,  # after a failure: requests needing the database fail at once; Retry-After
    "POLICY_DIR": str((DATA / "policy").resolve()),
    "MODEL_PATH": str((DATA / "model.conf").resolve()),
    "MAIL_BACKEND": "console",  # console | file | smtp
    "MAIL_FILE_DIR": str(INSTANCE / "outbox"),
    "MAIL_FROM": "no-reply@learnauthz.local",
    "SMTP_HOST": "localhost",
    "SMTP_PORT": 25,
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "INVITATION_TTL_HOURS": 72,
    "EMAIL_CHANGE_TTL_HOURS": 24,
    # Server-side sessions: ended by sign-out, after this long in total, or after this long unused.
    "SESSION_ABSOLUTE_SECONDS": 12 * 3600,
    "SESSION_IDLE_SECONDS": 2 * 3600,
    "SESSION_TOUCH_SECONDS": 60,  # how often a session's last_seen_at is written (idle lifetime resolution)
    # Reverse proxies in front of the app (X-Forwarded-For hops to trust); 0 = clients connect directly.
    "TRUSTED_PROXIES": 0,
    "SECURE_COOKIES": "auto",  # auto (= PUBLIC_URL is https) | true | false; also turns on HSTS
    "HSTS_SECONDS": 365 * 24 * 3600,
    # Rate limits (Flask-Limiter syntax; layered windows = back-off). Failed sign-ins only:
    "SIGNIN_LIMIT_ACCOUNT_CLIENT": "5 per minute; 10 per hour; 20 per day",
    "SIGNIN_LIMIT_CLIENT": "20 per minute; 100 per hour; 500 per day",
    # Every request, per client on the web-client API; per token on the decision API if set
    # (e.g. "100000 per minute"; off by default: checking a limit costs ~0.15 ms, as much as a decision):
    "API_RATE_LIMIT": "3000 per minute",
    "DECISION_RATE_LIMIT": "",
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "local://",  # per process (app.security.LocalStorage); redis://host:6379 shares them
    "RATELIMIT_KEY_PREFIX": "learnauthz",
    "RATELIMIT_SWALLOW_ERRORS": True,  # storage down: fall back to per-process memory counters
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "BATCH_MAX_CHECKS": 1000,
    "MIN_REVISION_WAIT_SECONDS": 2.0,
    "DECISION_LOG_SAMPLE": 0.0,
    "DECISION_FAST_PATH": True,  # plain /v1/check and batch requests answered in front of Flask (app.api.decision_wsgi)
    # A decision listener: only the decision and AuthZEN APIs, probes and metrics (others 404); writes never reach it.
    "DECISION_ONLY": False,
    "POLICY_WORKSPACE": "service",  # slug of the workspace holding the policy editors' roles (service pack)
    # Approvals a change request needs before it is applied, per pack (default 1; the author never counts).
    "POLICY_APPROVALS": {},
    "POLICY_SYNC": "auto",  # auto | poll | listen | off
    "POLICY_POLL_SECONDS": 1.0,
    # With a listener: past this many seconds without reading the revision log, decisions answer 503 (0: never).
    "POLICY_MAX_STALENESS_SECONDS": 0.0,
    # After each full load the state is written here; a start with the database down loads it ("": off).
    "POLICY_SNAPSHOT_PATH": "",
    # The policy listener's own connection (LISTEN needs a session: direct or PgBouncer session mode);
    # "" = the application's database URL. Without LISTEN the listener polls the revision head.
    "POLICY_LISTEN_URL": "",
    # Readiness (/readyz 503): more than this many revisions behind the database head (0: no bound) ...
    "POLICY_READY_MAX_LAG_REVISIONS": 50,
    # ... or, with a listener or poller running, no read of the revision log for this long (0: no bound).
    "POLICY_READY_MAX_SYNC_AGE_SECONDS": 30.0,
    # Partitioned decision tiers (app.authz.selection): hold only partition "k/N" of the workspaces
    # and/or only these workspaces (comma list of slugs); "" = every workspace. A decision about one
    # not held is a 421 problem naming its partition.
    "POLICY_PARTITION": "",
    "POLICY_WORKSPACES": "",
    # A pack change seen from another process is rebuilt in the background after a random 0..N s delay.
    "POLICY_REBUILD_JITTER_SECONDS": 2.0,
    # Observability (app.observability, app.logs): under gunicorn / app.serve each worker adds its
    # counts to the shared multiprocess metrics files this often (and when it answers /metrics).
    "METRICS_FLUSH_SECONDS": 1.0,
    "ACCESS_LOG_DECISIONS": False,  # access lines of decisions answered < 400 too (costly: docs/configuration.md)
    "ACCESS_LOG": True,  # one access line a request (app.logs.AccessLog); LOG_LEVEL / LOG_FORMAT: environment
    # The change feed (GET /v1/snapshot, /v1/changes; app.api.feed): held streams per process (each holds a
    # server thread; 503 + Retry-After above it), a heartbeat this often, the revision log read at least
    # this often besides NOTIFY, a stream's life (the follower resumes), how far back `since` may be (410).
    "FEED_MAX_CONNECTIONS": 2,
    "FEED_HEARTBEAT_SECONDS": 5.0,
    "FEED_POLL_SECONDS": 1.0,
    "FEED_MAX_SECONDS": 300.0,
    "FEED_RETAINED_REVISIONS": 10000,
    # Follower mode (`learnauthz sidecar`): the central tier's URL and the feed token; "" = not a follower.
    "FOLLOWER_UPSTREAM": "",
    "FOLLOWER_TOKEN": "",
    "FOLLOWER_RETRY_MAX_SECONDS": 5.0,  # reconnect back-off cap
    "FOLLOWER_READ_TIMEOUT_SECONDS": 15.0,  # a feed silent this long (no event, no heartbeat) is reconnected
    "MAX_INVITES_PER_REQUEST": 500,
    "IDEMPOTENCY_TTL_SECONDS": 24 * 3600.0,  # how long an Idempotency-Key and its outcome are kept (app.idempotency)
    "IDEMPOTENCY_LEASE_SECONDS": 30.0,  # a key's attempt is "in progress" (409) this long unless it finishes
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,
    "WTF_CSRF_CHECK_DEFAULT": False,
}


_TEXT = ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI")  # strings even when they look like JSON (a digits-only key)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _from_environment() -> dict[str, Any]:
    """``FLASK_*`` variables through Flask's own ``from_prefixed_env``: values are JSON when they
    parse as JSON (``FLASK_SQLALCHEMY_ENGINE_OPTIONS='{"pool_size": 5}'``, ``FLASK_SMTP_PORT=25``),
    strings otherwise; ``FLASK_A__B`` sets key ``B`` inside dict ``A``."""
    env = Config(str(ROOT))
    env.update(copy.deepcopy(DEFAULTS))  # FLASK_A__B merges into the default dict A
    env.from_prefixed_env("FLASK")
    return {k: v for k, v in env.items() if k not in DEFAULTS or v != DEFAULTS[k]}


def _checked(key: str, value: Any, default: Any) -> Any:
    """A setting from the environment in the type of its default (ValueError names the variable)."""
    if key in _TEXT and not isinstance(value, str):
        return os.environ.get(f"FLASK_{key}", str(value))  # the raw text, as written
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, bool):
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"FLASK_{key}: expected {type(default).__name__}, got {value!r}")


class ConfigError(RuntimeError):
    """A setting the service cannot start with; the message is one line naming the setting."""


def _production(cfg: dict[str, Any]) -> bool:
    """Served by a production server (gunicorn, granian via app.serve) and not under test."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith(("gunicorn", "granian")) and not cfg.get("TESTING")


MIN_SECRET_BYTES = 32
ENVIRONMENTS = ("production", "development")


def development(cfg: dict[str, Any]) -> bool:
    """APP_ENV=development (``make run`` sets it) or Flask's debug mode (``FLASK_DEBUG=1``, ``flask --debug``)."""
    return cfg.get("APP_ENV") == "development" or get_debug_flag()


def check_settings(cfg: dict[str, Any]) -> None:
    """Refuse settings the service cannot run with (ConfigError, one line each)."""
    if cfg.get("APP_ENV") not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV {cfg.get('APP_ENV')!r} is not one of {', '.join(ENVIRONMENTS)}")
    size = len(str(cfg["SECRET_KEY"]).encode())
    if size < MIN_SECRET_BYTES and not cfg.get("TESTING") and not development(cfg):
        raise ConfigError(
            f"SECRET_KEY is {size} bytes, at least {MIN_SECRET_BYTES} are needed outside development "
            "(`python -c 'import secrets; print(secrets.token_hex(32))'`; FLASK_APP_ENV=development accepts it)"
        )
    try:
        make_url(cfg["SQLALCHEMY_DATABASE_URI"]).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        # Not the URL itself in the message: it may carry a password.
        raise ConfigError(
            f"SQLALCHEMY_DATABASE_URI is not a usable database URL ({type(exc).__name__}): "
            "expected postgresql://user@host/db or sqlite:///path"
        ) from None
    model = Path(cfg["MODEL_PATH"])
    if not model.is_file() or not os.access(model, os.R_OK):
        raise ConfigError(f"MODEL_PATH {str(model)!r} is not a readable file (set FLASK_MODEL_PATH)")
    pdir = Path(cfg["POLICY_DIR"])
    if not pdir.is_dir() or not os.access(pdir, os.R_OK | os.X_OK):
        raise ConfigError(f"POLICY_DIR {str(pdir)!r} is not a readable directory (set FLASK_POLICY_DIR)")
    if not any(pdir.glob("*.yaml")):
        raise ConfigError(f"POLICY_DIR {str(pdir)!r} holds no policy packs (*.yaml)")
    try:
        Selection.parse(str(cfg.get("POLICY_PARTITION") or ""), str(cfg.get("POLICY_WORKSPACES") or ""))
    except ValueError as exc:
        raise ConfigError(f"POLICY_PARTITION: {exc}") from None


def load_config(test_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge defaults, FLASK_* environment (and DATABASE_URL), and test_config; check required keys."""
    cfg = dict(DEFAULTS)
    for key, value in _from_environment().items():
        cfg[key] = _checked(key, value, DEFAULTS[key]) if key in DEFAULTS else value
    if os.environ.get("DATABASE_URL") and not os.environ.get("FLASK_SQLALCHEMY_DATABASE_URI"):
        cfg["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    if test_config:
        cfg.update(test_config)
    if not cfg["SQLALCHEMY_DATABASE_URI"]:
        INSTANCE.mkdir(parents=True, exist_ok=True)
        cfg["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{INSTANCE / 'app.db'}"
    if cfg["SQLALCHEMY_DATABASE_URI"].startswith("postgresql://"):
        cfg["SQLALCHEMY_DATABASE_URI"] = (
            "postgresql+psycopg://" + cfg["SQLALCHEMY_DATABASE_URI"][len("postgresql://") :]
        )
    if not cfg["SECRET_KEY"]:
        if _production(cfg):
            # A production server: several workers and hosts must sign with one key, and a
            # per-host random file would break sessions and CSRF tokens behind a load balancer.
            raise ConfigError(
                "SECRET_KEY is not configured: set FLASK_SECRET_KEY to the same random value on every "
                "host (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`); a production "
                "server (gunicorn, app.serve) does not start with a per-host instance/secret_key"
            )
        cfg["SECRET_KEY"] = _instance_secret()
    check_settings(cfg)
    return cfg


def _instance_secret() -> str:
    """A per-installation secret kept in instance/secret_key (created once)."""
    path = INSTANCE / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()
