"""Request bodies of the policy API's drafts and change requests, as msgspec structs (parsed once with
:func:`app.api.bodies.parse`; unknown fields, wrong JSON types and missing fields are 422 problems)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Text = Annotated[str, Meta(max_length=2000)]
Title = Annotated[str, Meta(max_length=200)]
Message = Annotated[str, Meta(max_length=500)]


class PolicyBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the policy API's msgspec bodies: unknown fields are errors."""


class ChangeItem(PolicyBody, frozen=True):
    """One edit of a draft (as ``POST /v1/policy/preview`` takes it): add/remove/replace a pack rule, or
    add a role or an action to a pack."""

    op: Literal["add", "remove", "replace", "add_role", "add_action"]
    rule: list[Annotated[str, Meta(max_length=255)]] | Annotated[str, Meta(max_length=2000)] | None = None
    with_: list[Annotated[str, Meta(max_length=255)]] | Annotated[str, Meta(max_length=2000)] | None = msgspec.field(
        default=None, name="with"
    )
    pack: Annotated[str, Meta(max_length=64)] | None = None
    role: dict[str, Any] | None = None
    action: dict[str, Any] | None = None


Changes = Annotated[list[ChangeItem], Meta(max_length=500)]


def stored(changes: list[ChangeItem]) -> list[dict[str, Any]]:
    """Changes as stored with a draft or a change request (the JSON they came as, nulls left out)."""
    return [{k: v for k, v in msgspec.to_builtins(c).items() if v is not None} for c in changes]


class DraftIn(PolicyBody, frozen=True):
    """``PUT /v1/policy/draft``: the signed-in editor's working draft (an empty list discards it)."""

    changes: Changes


class ChangeRequestIn(PolicyBody, frozen=True):
    """``POST /v1/policy/change-requests``: submit a change request (``changes`` left out: the working draft)."""

    title: Title
    why: Text = ""
    changes: Changes | None = None


class ChangeRequestPatch(PolicyBody, frozen=True):
    """``PATCH /v1/policy/change-requests/<id>``: the author edits an open request (new changes are checked
    again and need fresh approvals)."""

    title: Title | None = None
    why: Text | None = None
    changes: Changes | None = None


class CommentIn(PolicyBody, frozen=True):
    """``POST /v1/policy/change-requests/<id>/comments``."""

    body: Text


class ReviewIn(PolicyBody, frozen=True):
    """``POST .../approve`` and ``.../reject``: an optional comment."""

    comment: Text = ""


class ApplyRequestIn(PolicyBody, frozen=True):
    """``POST .../apply``: the revision's message (default: the request's number and title)."""

    message: Message = ""
