"""Refusals in words: one sentence per decision reason and per invariant a service names.

The pages show these sentences instead of HTTP titles ("Forbidden", "Conflict", "Validation
failed"). ``base.html`` hands the mapping to ``static/lib.js`` as JSON, and the 403 page uses it
too, so each reason has exactly one sentence. ``tests/test_words.py`` fails for a ``Reason``
without one.
"""

from __future__ import annotations

from app.authz.types import Reason

# One sentence per reason code of a decision (app/authz/types.py).
REASONS: dict[Reason, str] = {
    Reason.GRANTED: "You may do this.",
    Reason.NO_ROLE: "You have no role in this workspace.",
    Reason.NOT_PERMITTED: "Your role does not let you do this.",
    Reason.DENIED_BY_POLICY: "The workspace's policy does not allow this.",
    Reason.NOT_ASSIGNEE: "This is assigned to someone else.",
    Reason.NOT_OWNER: "This belongs to someone else.",
    Reason.OUTSIDE_GROUP: "This person is not in a group you teach.",
    Reason.OUTSIDE_TEAM: "This person is not in a team you manage.",
    Reason.CONDITION_NOT_MET: "A condition of this permission does not hold here (the group is still in use, say).",
    Reason.RANK_LIMIT: "You can give only roles below your own, to people whose role is below your own.",
    Reason.UNKNOWN_MEMBER: "This person is not a member of the workspace.",
    Reason.TARGET_REQUIRED: "Choose the person this is about first.",
    Reason.SELF_CHANGE: "You cannot change your own role or remove yourself here.",
    Reason.FEATURE_OFF: "This feature is switched off for the workspace.",
    Reason.UNKNOWN_WORKSPACE: "There is no such workspace.",
    Reason.UNKNOWN_SUBJECT: "We do not know this person.",
    Reason.UNKNOWN_ACTION: "This is not something the workspace's role model offers.",
    Reason.INVALID_REQUEST: "Something in this request is not valid.",
    Reason.ERROR: "We could not decide this just now, so it was refused. Try again in a moment.",
}

# Invariants the membership services name in a 409 (``invariant=...``).
INVARIANTS: dict[str, str] = {
    "last_owner": "A workspace keeps at least one owner: make someone else owner first.",
    "self_owner": "You cannot remove yourself as owner: transfer ownership first.",
}

# What the error pages say, by HTTP status: a title in words, never the status name.
PAGE_TITLES: dict[int, str] = {
    403: "You cannot open this page",
    404: "There is no such page",
}


def sentence(code: str) -> str:
    """The sentence of a reason or invariant code; a general one for an unknown code."""
    if code in INVARIANTS:
        return INVARIANTS[code]
    try:
        return REASONS[Reason(code)]
    except ValueError:
        return REASONS[Reason.NOT_PERMITTED]


def for_script() -> dict[str, str]:
    """Every sentence by code, as ``lib.js`` reads it from the page."""
    return {str(r): s for r, s in REASONS.items()} | INVARIANTS
