"""Prefixed identifiers and their validation, before anything reaches Casbin.

Every value that Casbin compares carries a kind prefix (``user:42``, ``ws:acme``,
``role:classroom:admin``), so a user named "admin" can never collide with a role, and a
value can never be ``*`` (the platform domain pattern), contain a comma (the adapter's field
separator) or a newline (the CSV line separator).
"""

from __future__ import annotations

import re

_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,127}")
_PACK = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,79}")

PLATFORM_DOMAIN = "*"


class InvalidIdentifierError(ValueError):
    """A subject, workspace, resource or action that may not reach Casbin."""


def valid_local(value: object) -> bool:
    """True if value is a safe identifier body (no prefix)."""
    return isinstance(value, str) and _LOCAL.fullmatch(value) is not None


def valid_pack(value: object) -> bool:
    """True if value is a pack id."""
    return isinstance(value, str) and _PACK.fullmatch(value) is not None


def valid_action(value: object) -> bool:
    """True if value is an action id (snake_case)."""
    return isinstance(value, str) and _ACTION.fullmatch(value) is not None


def _key(prefix: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not valid_local(value):
        raise InvalidIdentifierError(f"invalid {prefix} identifier")
    return f"{prefix}:{value}"


def user_key(user: object) -> str:
    """``user:<id>`` for a user id or a safe name."""
    return _key("user", user)


def ws_key(slug: object) -> str:
    """``ws:<slug>`` for a workspace slug."""
    return _key("ws", slug)


def group_key(name: object) -> str:
    """``group:<name>`` for a classroom/simulations group."""
    return _key("group", name)


def team_key(name: object) -> str:
    """``team:<name>`` for a skills team."""
    return _key("team", name)


def pack_key(pack: str) -> str:
    """``pack:<id>``, the value g4 links a workspace to."""
    if not valid_pack(pack):
        raise InvalidIdentifierError("invalid pack identifier")
    return f"pack:{pack}"


def platform_domain(pack: str) -> str:
    """``platform:<pack>``: the domain of platform-level requests for one pack."""
    if not valid_pack(pack):
        raise InvalidIdentifierError("invalid pack identifier")
    return f"platform:{pack}"


def role_key(pack: str, role: str) -> str:
    """``role:<pack>:<role>``."""
    if not valid_pack(pack) or not valid_pack(role):
        raise InvalidIdentifierError("invalid role identifier")
    return f"role:{pack}:{role}"


def split_role(key: str) -> tuple[str, str]:
    """(pack, role) of a role key; raises InvalidIdentifierError if it is not one."""
    parts = key.split(":")
    if len(parts) != 3 or parts[0] != "role" or not valid_pack(parts[1]) or not valid_pack(parts[2]):
        raise InvalidIdentifierError("invalid role key")
    return parts[1], parts[2]


def is_prefixed(value: object, prefix: str) -> bool:
    """True if value is ``<prefix>:<safe local>``."""
    if not isinstance(value, str) or not value.startswith(prefix + ":"):
        return False
    return valid_local(value[len(prefix) + 1 :])


def domain_of(workspace: str) -> str:
    """The Casbin domain of a workspace slug (``ws:<slug>``; prefixed domains unchanged)."""
    return workspace if workspace.startswith(("ws:", "platform:")) else f"ws:{workspace}"
