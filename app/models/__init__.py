"""SQLAlchemy 2.x models. Every table the service owns is declared here."""

from .base import Base, utcnow
from .identity import LoginAttempt, ServiceToken, User
from .policy import CasbinRule, PolicyHead, PolicyPack, PolicyRevision
from .workspace import (
    AuditEvent,
    Group,
    GroupMember,
    Invitation,
    Membership,
    OutboxEmail,
    Workspace,
)

__all__ = [
    "AuditEvent",
    "Base",
    "CasbinRule",
    "Group",
    "GroupMember",
    "Invitation",
    "LoginAttempt",
    "Membership",
    "OutboxEmail",
    "PolicyHead",
    "PolicyPack",
    "PolicyRevision",
    "ServiceToken",
    "User",
    "Workspace",
    "utcnow",
]
