"""User references as the decision surfaces receive them: what a value names (an id, an email, an
external id) before anyone is looked up."""

from __future__ import annotations

import re

# A user reference never holds whitespace, control characters, commas or "*": such a value names
# nobody (it is not trimmed into a real user), so a malformed subject can never be allowed.
_BAD_REF = re.compile(r"[\s\x00-\x1f\x7f,*]")
MAX_USER_ID = 2**31 - 1  # users.id is an INTEGER column: larger ids name nobody (PostgreSQL refuses to compare them)
# An external id: printable ASCII without ",", "*" or "@", not all digits, at most 254 characters.
EXTERNAL_ID = re.compile(r"(?![0-9]+\Z)[\x21-\x29\x2b\x2d-\x3f\x41-\x7e]{1,254}")

Ref = tuple[str, int | str]


def user_ref(value: object) -> tuple[str, int | str] | None:
    """("id", n), ("email", address) or ("ext", external id) for a user reference; None if it names nobody.

    ASCII digits (or ``user:<digits>``) are a user id, a value with ``@`` is an email (any case),
    anything else is an external id (exact match). External ids are therefore never all digits
    and never hold ``@`` (``users.set_external_id`` refuses them).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("id", value) if 0 < value <= MAX_USER_ID else None
    if not isinstance(value, str) or not value or len(value) > 254 or _BAD_REF.search(value):
        return None
    body = value[5:] if value.startswith("user:") else value
    if body.isascii() and body.isdigit():  # str.isdigit() alone admits "²" (int() fails) and "٣" (int() = 3)
        return ("id", int(body)) if len(body) < 19 and 0 < int(body) <= MAX_USER_ID else None
    if "@" in body:
        if not body.isascii():
            try:
                body.encode("utf-8")  # a lone surrogate ("\ud800", valid in JSON) is nobody's address
            except UnicodeEncodeError:
                return None
        return ("email", body.lower())
    if body is value and EXTERNAL_ID.fullmatch(value):
        return ("ext", value)
    return None
