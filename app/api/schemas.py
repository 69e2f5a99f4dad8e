"""Pydantic v2 schemas of the decision API's query strings and answers, and of the policy API.

The same models validate requests (``app.api.parse_body``/``parse_query``) and generate
``/openapi.json`` (``app.api.docs``). Request models forbid unknown fields and use strict types,
so ``{"subject": true}`` or ``{"action": 5}`` is a 422, never a silent coercion. The decision API's
request bodies are msgspec structs (``app.api.decision``, ``app.decisions.resolution.Check``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from app.decisions.resolution import Check

Ref = Annotated[StrictInt | StrictStr, Field(description="a user id, an email, or user:<id>")]
Name = Annotated[StrictStr, Field(max_length=254)]
Revision = Annotated[StrictInt, Field(ge=0, description="answer from a policy at least this fresh")]


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class QueryModel(BaseModel):
    """Base of query strings: values arrive as strings and are converted (lax), unknown keys refused."""

    model_config = ConfigDict(extra="forbid")


# -- the policy playground's check (POST /v1/policy/explain) ------------------------------------------
class Attributes(RequestModel):
    """Resource facts the policy reads; people are user ids or emails, scopes are names."""

    assignee: Ref | None = Field(None, description="who the resource is assigned to")
    owner: Ref | None = Field(None, description="who owns the resource")
    member: Ref | None = Field(None, description="the member acted upon (role changes, removals, moves)")
    group: Name | None = Field(None, description="group name (or group:<name>)")
    team: Name | None = Field(None, description="team name (or team:<name>)")
    new_role: Name | None = Field(None, description="role id of the workspace's pack being granted")
    role: Name | None = Field(
        None, description="ignored: the member's current role always comes from the policy, never the caller"
    )
    grantee: Ref | None = Field(
        None,
        description="who receives the grant (an invitee, a future platform role holder): a user reference, "
        "or 'newcomer' for an address without an account; never the subject",
    )
    target: Literal["any"] | None = Field(
        None,
        description="'any' asks explicitly whether the subject may do this to anyone at all (for UIs); "
        "without it a rank-scoped action needs a member or a grantee (else target_required)",
    )


class Resource(RequestModel):
    """The resource acted upon."""

    type: Name = ""
    id: StrictStr | StrictInt = ""
    attributes: Attributes = Field(default_factory=lambda: Attributes.model_validate({}))


class CheckItem(RequestModel):
    """One authorization question."""

    subject: Ref
    workspace: Name = Field(description="workspace slug (or ws:<slug>)")
    action: Name = Field(description="an action of the workspace's pack, snake_case")
    resource: Resource | None = None


class ExplainQuery(QueryModel):
    """Query string of the check endpoints."""

    explain: Literal["true", "false", "1", "0"] | None = None
    min_revision: Annotated[int, Field(ge=0)] | None = None


class FeedQuery(QueryModel):
    """Query string of ``/v1/snapshot`` and ``/v1/changes``: narrow the view (∩ the token's binding)."""

    since: Annotated[int, Field(ge=0)] | None = None
    partition: Annotated[str, Field(max_length=16)] | None = None
    workspaces: Annotated[str, Field(max_length=4000)] | None = None


class CheckResult(BaseModel):
    """A decision: allowed or not, a stable reason code, the policy revision."""

    allowed: bool
    reason: str = Field(description="granted, no_role, not_permitted, not_assignee, unknown_subject, ...")
    revision: int
    rule: list[str] | None = Field(None, description="explain: the matched Casbin rule")
    role_path: list[str] | None = Field(None, description="explain: subject → role → ... → the rule's role")
    condition: dict[str, str] | None = Field(
        None, description="explain: the matched rule's attribute condition, {id, when} (a CEL expression)"
    )


class BatchResult(BaseModel):
    """Results in request order."""

    results: list[CheckResult]
    revision: int


class PermissionsQuery(QueryModel):
    """``GET /v1/permissions``."""

    subject: str
    workspace: str
    any_target: bool = Field(
        False, description="decide rank-scoped actions for 'anyone at all' (else they are target_required)"
    )
    min_revision: Annotated[int, Field(ge=0)] | None = None


class PermissionsResult(BaseModel):
    """Every action of the workspace's pack, decided for the subject (no particular resource)."""

    subject: str
    workspace: str
    pack: str | None
    revision: int
    reason: str | None = Field(None, description="unknown_subject or unknown_workspace when nothing was decided")
    allowed: list[str]
    decisions: dict[str, CheckResult]


class AssignableQuery(QueryModel):
    """``GET /v1/assignable-roles``."""

    actor: str
    workspace: str
    target: str | None = None
    any_target: bool = Field(False, description="without a target: the roles the actor may grant to anyone at all")
    min_revision: Annotated[int, Field(ge=0)] | None = None


class AssignableResult(BaseModel):
    """Roles the actor may grant (to the target, if given)."""

    actor: str
    workspace: str
    target: str | None
    revision: int
    reason: str | None = Field(None, description="unknown_subject or unknown_workspace")
    roles: list[str]


class WhoCanQuery(QueryModel):
    """``GET /v1/who-can``."""

    workspace: str
    action: str
    any_target: bool = Field(False, description="ask rank-scoped actions for 'anyone at all' (else nobody can)")
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: str | None = None
    min_revision: Annotated[int, Field(ge=0)] | None = None


class Principal(BaseModel):
    """A user allowed to perform the action."""

    subject: str
    user_id: int
    email: str | None
    via: str = Field(description="workspace or platform")


class WhoCanResult(BaseModel):
    """One page: ``complete`` is true only when no member is left unexamined."""

    workspace: str
    action: str
    revision: int
    items: list[Principal]
    next_cursor: str | None
    complete: bool
    examined: int


# -- health -------------------------------------------------------------------------------------
class Health(BaseModel):
    """Liveness / readiness."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
    revision: int | None = None
    sync: dict[str, Any] | None = Field(
        default=None, description="readiness only: engine revision and the cross-process listener's state"
    )


# -- policy API ---------------------------------------------------------------------------------
RuleIn = Annotated[
    list[StrictStr] | StrictStr,
    Field(description='a rule as ["p", "70", "role:...", ...] or as a Casbin CSV line "p, 70, role:..., ..."'),
]


class RoleIn(RequestModel):
    """A new role of a pack."""

    id: StrictStr
    label: StrictStr | None = None
    rank: StrictInt
    platform: StrictBool = False
    description: StrictStr = ""


class ActionIn(RequestModel):
    """A new action of a pack."""

    id: StrictStr
    label: StrictStr | None = None
    section: StrictStr = ""
    source: StrictStr = ""
    feature: StrictStr = ""


class ChangeIn(RequestModel):
    """One edit: add/remove/replace a rule, or add a role or an action to a pack."""

    op: Literal["add", "remove", "replace", "add_role", "add_action"]
    rule: RuleIn | None = Field(None, description="add, remove, replace (the rule replaced)")
    with_: RuleIn | None = Field(None, alias="with", description="replace: the new rule")
    pack: StrictStr | None = Field(None, description="add_role, add_action")
    role: RoleIn | None = None
    action: ActionIn | None = None


class ProposalIn(RequestModel):
    """A proposed policy change."""

    changes: Annotated[list[ChangeIn], Field(min_length=1, max_length=500)]
    message: Annotated[StrictStr, Field(max_length=500)] = ""
    expected_revision: Revision | None = Field(
        None, description="apply only if the policy is still at this revision (409 otherwise)"
    )


class RollbackIn(RequestModel):
    """Roll the pack rules and documents back to an earlier revision (as a new revision)."""

    to_revision: Revision
    message: Annotated[StrictStr, Field(max_length=500)] = ""


class RulesQuery(QueryModel):
    """``GET /v1/policy/rules`` filters."""

    pack: str | None = None
    type: Literal["p", "g", "g4"] | None = None
    role: str | None = Field(None, description="role id (with pack) or role key role:<pack>:<role>")
    min_revision: Annotated[int, Field(ge=0)] | None = None


class RulesResult(BaseModel):
    """Pack rules (p permissions, g role inheritance, g4 pack → role links)."""

    revision: int
    count: int
    rules: list[list[str]]


class ModelResult(BaseModel):
    """The Casbin model and every pack's roles, actions, features and grant exceptions."""

    revision: int
    model: str
    packs: dict[str, Any]


class Flip(BaseModel):
    """One role × action × pack cell whose decision changes."""

    pack: str
    role: str
    action: str
    before: str
    after: str
    change: Literal["gain", "lose", "scope"]
    users: int
    workspaces: int
    sample: list[str] = Field(default_factory=list, description="emails of up to 5 of the people affected")


class Impact(BaseModel):
    """Per action, how many users in how many workspaces gain or lose it."""

    pack: str
    action: str
    gain_users: int
    gain_workspaces: int
    lose_users: int
    lose_workspaces: int


class ValidationResult(BaseModel):
    """``valid`` with every problem listed."""

    valid: bool
    revision: int
    problems: list[str]


class PreviewResult(ValidationResult):
    """The decisions that flip and who is affected."""

    packs: list[str]
    flips: list[Flip]
    impact: list[Impact]


class MatrixQuery(QueryModel):
    """``GET /v1/policy/matrix``."""

    pack: Annotated[str, Field(max_length=64)]


class MatrixResult(BaseModel):
    """A pack's role × action table computed by the engine: ✅, ✅* (managed scope), ✅† (rank), ✅ᶜ (condition), —."""

    revision: int
    pack: str
    roles: list[dict[str, Any]]
    rows: list[dict[str, Any]]


class ExplainIn(CheckItem):
    """``POST /v1/policy/explain``: a check explained at the live revision, or at a draft (``changes``)."""

    changes: Annotated[list[ChangeIn], Field(default_factory=list, max_length=500)]

    def as_check(self) -> Check:
        """The check part, as the decision path takes it."""
        return msgspec.convert(self.model_dump(exclude={"changes"}), Check)


class ExplainResult(CheckResult):
    """The decision, the matched rule and the role path; ``draft`` when decided on a draft."""

    draft: bool = False
    problems: list[str] = Field(default_factory=list, description="what is wrong with the draft, if any")


class RollbackPreviewResult(PreviewResult):
    """What a rollback would change: rules added and removed, the cells that flip, who is affected."""

    to_revision: int
    added: list[list[str]]
    removed: list[list[str]]
    documents: list[str]


class ApplyResult(BaseModel):
    """The new revision."""

    revision: int
    changes: int
    documents: list[str]


class RevisionOut(BaseModel):
    """One revision of the log."""

    id: int
    kind: str
    category: str = Field(description="policy | membership | settings")
    message: str
    actor_id: int | None
    actor: str | None = Field(None, description="the author's email")
    created_at: str
    changes: int
    rollback: bool = Field(description="a rollback to before it applies (policy revisions only)")


class RevisionsResult(BaseModel):
    """Newest first."""

    revision: int
    category: str
    items: list[RevisionOut]


class RevisionsQuery(QueryModel):
    """Paging of the revision log."""

    before: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    category: Literal["policy", "membership", "settings", "all"] = Field(
        "policy", description="policy edits, rollbacks and imports (default); membership data; settings; all"
    )


class SessionResult(BaseModel):
    """The signed-in policy editor: user, meta-policy permissions, CSRF token for writes."""

    user_id: int
    email: str
    permissions: list[str]
    csrf_token: str


class TokenIn(RequestModel):
    """A new service token."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
    # What the token may ask about: exactly one of the three (else 422).
    workspaces: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=67)]], Field(max_length=100)] = []
    platform: Annotated[StrictStr, Field(min_length=1, max_length=49)] | None = None
    all_workspaces: StrictBool = False
    feed: StrictBool = False  # may also follow the change feed (GET /v1/snapshot, /v1/changes) within the binding


class TokenOut(BaseModel):
    """A service token (the secret only on creation); ``binding`` says what it may ask about."""

    name: str
    created_at: str
    revoked_at: str | None
    last_used_at: str | None
    binding: str
    migrated: bool
    feed: bool = False
    token: str | None = None


class TokensResult(BaseModel):
    """Every service token (no secrets)."""

    items: list[TokenOut]
