"""Blueprint registry: each surface registers here (health, decision API, AuthZEN, member API, policy API, web)."""

from __future__ import annotations

import importlib

from flask import Flask

# module path -> attribute holding the Blueprint; modules that do not exist yet are skipped
BLUEPRINTS = [
    ("app.api.health", "bp"),
    ("app.api.auth", "bp"),
    ("app.api.members", "bp"),
    ("app.api.groups", "bp"),
    ("app.api.decision", "bp"),
    ("app.api.authzen", "bp"),
    ("app.api.policy", "bp"),
    ("app.api.docs", "bp"),
    ("app.web.pages", "bp"),
    ("app.web.workbench", "bp"),
]


def register(app: Flask) -> None:
    """Register every blueprint that exists."""
    for module_path, attr in BLUEPRINTS:
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_path == missing or module_path.startswith(missing + "."):
                continue  # that surface is not built (yet); anything else missing is a real error
            raise
        app.register_blueprint(getattr(module, attr))
