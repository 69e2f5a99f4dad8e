"""Input checks shared by every service and web-client view: database ids, integers and text.

Both backends must see only what they can store: every id column is a PostgreSQL ``INTEGER``
(int4), and PostgreSQL text cannot hold NUL (``\\x00``). Values outside that are refused here,
as a 422 (or, for ids in a path, a 404), before they reach a query.
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import UNSET, Struct

from app.errors import ValidationError

MAX_ID = 2**31 - 1  # the largest PostgreSQL INTEGER: no row can have a larger id
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: '²'.isdigit() and '٣'.isdigit() are True too
# Names and labels: no control characters at all. Free text (descriptions): tab and newlines pass.
# Lone surrogates cannot be encoded as UTF-8, so neither kind may hold them.
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_BAD_SECRET = re.compile(r"[\x00\ud800-\udfff]")


def is_id(value: object) -> bool:
    """True for a JSON integer (not a boolean) that can be a row id (1..MAX_ID)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def parse_int(raw: str, lo: int, hi: int) -> int | None:
    """raw as an integer in lo..hi if it is 1-18 ASCII digits; None otherwise."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def parse_id(raw: str) -> int | None:
    """raw as a row id (ASCII digits, 1..MAX_ID); None otherwise."""
    return parse_int(raw, 1, MAX_ID)


def text_problem(value: str, kind: str = "name") -> str | None:
    """Why value cannot be stored as a ``kind`` ("name", "text" or "secret"); None if it can."""
    bad = {"name": _BAD_NAME, "text": _BAD_TEXT, "secret": _BAD_SECRET}[kind].search(value)
    if bad is None:
        return None
    ch = bad.group()
    if ch == "\x00":
        return "must not contain NUL characters"
    if "\ud800" <= ch <= "\udfff":
        return "must not contain unpaired surrogates"
    return "must not contain control characters"


def check_text(value: object, field: str, kind: str = "name") -> None:
    """ValidationError if value is a string holding characters a ``kind`` field may not have.

    Non-strings pass: type checks stay with the caller, which knows its field's shape.
    """
    if isinstance(value, str):
        problem = text_problem(value, kind)
        if problem is not None:
            raise ValidationError(f"{field} {problem}", errors=[{"field": field, "message": problem}])


def present(body: Struct) -> dict[str, Any]:
    """The fields a partial-update body carries (those not left ``UNSET``)."""
    return {f: v for f in body.__struct_fields__ if (v := getattr(body, f)) is not UNSET}
