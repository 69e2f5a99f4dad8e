"""Request bodies of the web-client APIs (auth, members, invitations, groups and teams), as msgspec
structs validated at the blueprint (:func:`app.api.bodies.parse`): wrong JSON types, missing
fields and unknown fields (refused, as in the decision API) are 422 problems ``{loc, message,
type}``; repeated keys and malformed JSON 400. The services get typed values and keep the checks
that need the database or the policy (which role, which address, who may).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType

from app.inputs import MAX_ID

UserId = Annotated[int, Meta(ge=1, le=MAX_ID, description="a user id")]


class WebBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the web-client bodies: unknown fields are errors."""


# -- auth --------------------------------------------------------------------------------------------
class SignIn(WebBody, frozen=True):
    """``POST /api/auth/signin``."""

    email: str
    password: str


class VerifyEmail(WebBody, frozen=True):
    """``POST /api/auth/verify-email``: the token of the link mailed to the new address."""

    token: str


class SignUp(WebBody, frozen=True):
    """``POST /api/auth/signup``: an account from a sign-up link's token."""

    token: str
    password: str
    display_name: str | None = ""
    username: str | None = None


# -- members and invitations -------------------------------------------------------------------------
class Invite(WebBody, frozen=True):
    """``POST /api/workspaces/<slug>/invitations``."""

    emails: Annotated[
        str | list[str], Meta(description="addresses: one string (commas or newlines between them) or a list")
    ]
    role: Annotated[str | None, Meta(description="a role id of the pack (default: its default role)")] = None
    partial: Annotated[bool, Meta(description="report invalid addresses, members and open invitations per address")] = (
        False
    )


class RoleChange(WebBody, frozen=True):
    """``PATCH /api/workspaces/<slug>/members/<id>``."""

    role: str


class UserIds(WebBody, frozen=True):
    """Members named by id (``members/remove``; a group's or team's ``<relation>``)."""

    user_ids: Annotated[list[UserId], Meta(min_length=1)]


class Ownership(WebBody, frozen=True):
    """``POST /api/workspaces/<slug>/ownership``."""

    user_id: UserId


class FeatureSwitch(WebBody, frozen=True):
    """``PUT /api/workspaces/<slug>/features/<feature>``."""

    enabled: bool


class FeatureSwitches(WebBody, frozen=True):
    """``PATCH /api/workspaces/<slug>/features``: several switches saved at once."""

    switches: Annotated[dict[str, bool], Meta(min_length=1, max_length=500, description="feature id -> enabled")]


class WorkspaceCreate(WebBody, frozen=True):
    """``POST /api/workspaces``: a workspace of a pack, with an optional owner."""

    slug: Annotated[str, Meta(description="2-64 lowercase letters, digits and '-'")]
    name: Annotated[str, Meta(description="the display name")]
    pack: Annotated[str, Meta(description="a pack id: classroom, simulations, academy, skills")]
    owner_id: UserId | None = None


class WorkspaceUpdate(WebBody, frozen=True):
    """``PATCH /api/workspaces/<slug>``: a new name and/or settings merged into the current ones."""

    name: Annotated[str, Meta(min_length=1, max_length=120, pattern=r"\S", description="1-120 characters")] | (
        UnsetType
    ) = UNSET
    settings: Annotated[dict[str, Any], Meta(description="merged into the settings; under 16 kB")] | UnsetType = UNSET


class DeleteWorkspace(WebBody, frozen=True):
    """``DELETE /api/workspaces/<slug>``: the body repeats the slug."""

    confirm: str


class PlatformGrant(WebBody, frozen=True):
    """``POST /api/platform/<pack>/roles``: the person by id, or by email (the console)."""

    role: str
    user_id: UserId | None = None
    email: str | None = None


# -- groups and teams --------------------------------------------------------------------------------
class Move(WebBody, frozen=True):
    """``POST .../<kinds>/<name>/<rel>/<id>/move``: the group or team to move to."""

    to: str


Capacity = Annotated[int, Meta(ge=1, le=100_000, description="null (no limit) or 1-100000")]
Description = Annotated[str, Meta(max_length=500, description="0-500 characters")]


class UnitCreate(WebBody, frozen=True):
    """``POST .../<kinds>``: a new group or team."""

    name: Annotated[str, Meta(description="1-64 letters, digits, '.', '_' or '-'")]
    description: Description = ""
    capacity: Capacity | None = None


class UnitUpdate(WebBody, frozen=True):
    """``PATCH .../<kinds>/<name>``: what to change (absent fields stay)."""

    description: Description | UnsetType = UNSET
    capacity: Capacity | None | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
