"""Extensions, created unbound and bound by ``init_app``: db, login manager, CSRF, authz.

``authz`` is the process's :class:`~app.policy.runtime.PolicyRuntime` (the engine's
life and cross-process sync live there).
"""

from __future__ import annotations

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from app.models import Base
from app.policy.runtime import PolicyRuntime

db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
csrf = CSRFProtect()
authz = PolicyRuntime()
