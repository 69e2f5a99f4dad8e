"""Typed requests and decisions of the decision core."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .conditions import NO_PROPS, Props

# The resource fields the matcher reads; the core fills each one ("" when absent).
RESOURCE_FIELDS = (
    "type",
    "id",
    "assignee",
    "owner",
    "member",
    "group",
    "team",
    "role",
    "new_role",
    "grantee",
    "target",
)
# ``grantee`` of an invitation to an address without an account: somebody who does not exist yet,
# so never the subject (a user key is ``user:<id>``, this is not).
NEWCOMER = "newcomer"
# ``target`` of the explicit question "may they do this to anyone at all?" (pages, pre-checks).
ANY_TARGET = "any"


class Reason(StrEnum):
    """Stable reason codes of a decision."""

    GRANTED = "granted"
    NO_ROLE = "no_role"
    NOT_PERMITTED = "not_permitted"
    DENIED_BY_POLICY = "denied_by_policy"
    NOT_ASSIGNEE = "not_assignee"
    NOT_OWNER = "not_owner"
    OUTSIDE_GROUP = "outside_group"
    OUTSIDE_TEAM = "outside_team"
    CONDITION_NOT_MET = "condition_not_met"
    RANK_LIMIT = "rank_limit"
    UNKNOWN_MEMBER = "unknown_member"
    TARGET_REQUIRED = "target_required"
    SELF_CHANGE = "self_change"
    FEATURE_OFF = "feature_off"
    UNKNOWN_WORKSPACE = "unknown_workspace"
    UNKNOWN_SUBJECT = "unknown_subject"
    UNKNOWN_ACTION = "unknown_action"
    INVALID_REQUEST = "invalid_request"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ResourceFacts:
    """The resource as Casbin sees it (``r.obj``): every field a plain string.

    ``grantee`` is who receives something by the action (a role, a membership, a platform role, a
    group or team link): ``user:<id>`` or NEWCOMER; the matcher refuses it when it is the subject.
    ``target`` is "" or ANY_TARGET: a rank-scoped rule needs a member, a grantee, or this explicit
    "anyone at all" (model.conf), so a caller that forgets the target is denied, not allowed.
    """

    type: str = ""
    id: str = ""
    assignee: str = ""
    owner: str = ""
    member: str = ""
    group: str = ""
    team: str = ""
    role: str = ""
    new_role: str = ""
    grantee: str = ""
    target: str = ""
    # What pack conditions read (``when:<id>`` scopes): subject, resource, action and context
    # properties; not a matcher field of its own (``when(p.scope, r.obj)`` reads it).
    props: Props = NO_PROPS


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One question, in model.conf order: may ``subject`` in ``domain`` do ``action`` on ``obj``."""

    subject: str
    domain: str
    obj: ResourceFacts
    action: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, a stable reason, and the policy revision it came from."""

    allowed: bool
    reason: str
    revision: int
    rule: tuple[str, ...] | None = None
    role_path: tuple[str, ...] = field(default_factory=tuple)
    # explain: the attribute condition of the matched rule (``when:<id>``): its id and CEL expression
    condition: tuple[str, str] | None = None

    def as_dict(self, explain: bool = False) -> dict[str, object]:
        """JSON-ready form; ``explain`` adds the matched rule, the role path and, for a rule with an
        attribute condition, the condition (``{"id", "when"}``)."""
        out: dict[str, object] = {"allowed": self.allowed, "reason": self.reason, "revision": self.revision}
        if explain:
            out["rule"] = list(self.rule) if self.rule else None
            out["role_path"] = list(self.role_path)
            if self.condition is not None:
                out["condition"] = {"id": self.condition[0], "when": self.condition[1]}
        return out
