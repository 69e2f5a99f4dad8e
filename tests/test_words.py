"""Refusals in words (app/web/words.py): one sentence for every reason code and invariant, no
HTTP jargon, and the page hands exactly that mapping to lib.js."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask

from app.authz.types import Reason
from app.web import words

JARGON = re.compile(r"\b(forbidden|conflict|validation failed|unprocessable|http|40\d|409|422)\b", re.IGNORECASE)


def test_every_reason_has_a_sentence() -> None:
    """A new Reason without a sentence fails here."""
    assert set(words.REASONS) == set(Reason)


@pytest.mark.parametrize("code", [*(r.value for r in Reason), *words.INVARIANTS])
def test_each_sentence_is_plain_words(code: str) -> None:
    text = words.sentence(code)
    assert text[0].isupper() and text.endswith("."), text
    assert not JARGON.search(text), text
    assert "_" not in text, text  # no code names


def test_rank_refusal_says_below_your_own() -> None:
    assert "only roles below your own" in words.sentence("rank_limit")


def test_unknown_code_falls_back_to_not_permitted() -> None:
    assert words.sentence("no-such-code") == words.REASONS[Reason.NOT_PERMITTED]


def test_the_page_carries_the_mapping(demo: Flask) -> None:
    html = demo.test_client().get("/login").get_data(as_text=True)
    found = re.search(r'<script type="application/json" id="reason-words">(.*?)</script>', html, re.DOTALL)
    assert found is not None
    assert json.loads(found.group(1)) == words.for_script()
    assert set(json.loads(found.group(1))) == {r.value for r in Reason} | set(words.INVARIANTS)
