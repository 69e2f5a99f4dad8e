"""SQLAlchemy 2.x models. Every table the service owns is declared here."""

from .base import Base, utcnow
from .idempotency import IdempotencyKey
from .identity import EmailChange, ServiceToken, User, UserSession
from .policy import CasbinRule, ChangeRequest, ChangeRequestEvent, PolicyHead, PolicyPack, PolicyRevision
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
    "ChangeRequest",
    "ChangeRequestEvent",
    "EmailChange",
    "Group",
    "IdempotencyKey",
    "GroupMember",
    "Invitation",
    "Membership",
    "OutboxEmail",
    "PolicyHead",
    "PolicyPack",
    "PolicyRevision",
    "ServiceToken",
    "User",
    "UserSession",
    "Workspace",
    "utcnow",
]
