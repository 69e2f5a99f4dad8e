"""Verifier cases as data (``policy/verifier-tests/*.yaml``): an edit of a shipped pack → PASS or the
counterexamples expected, and those that must not be reported.

They pin the verifier's boundaries (``grant_rank`` and ``manage_rank`` at equal rank, exceptions
counting only with their ``why``, ``may_grant`` apart from ``may_manage``), feature-gated rules
(issue 21 reproduction 1), grant rules at every scope (reproduction 2) and inheritance. ``make
mutation`` runs this module (with the oracle's fast tests) against mutants of
``app/authz/delegation.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.authz import delegation
from app.authz.packs import PackSet, load_packs, packset_from_documents, parse_rule_line

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = ROOT / "policy" / "verifier-tests"
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")


def _cases() -> list[Any]:
    out = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]:
            out.append(pytest.param(case, id=f"{path.stem}::{case['name']}"))
    return out


def edited(case: dict[str, Any]) -> PackSet:
    """The shipped packs with the case's edit applied to its pack."""
    pid = case["pack"]
    docs = {p: dict(pack.document) for p, pack in PACKS.packs.items()}
    doc = docs[pid]
    for role in case.get("roles", []):
        role = dict(role)
        key = "platform_roles" if role.pop("platform", False) else "roles"
        doc[key] = [*(doc.get(key) or []), role]
    if "grants" in case:
        doc["grants"] = case["grants"]
    removed = {parse_rule_line(x) for x in case.get("remove", [])}
    rules = [r for r in PACKS.all_rules() if r not in removed]
    assert len(rules) == len(PACKS.all_rules()) - len(removed), f"a rule to remove is not in the pack: {removed}"
    rules += [r for r in (parse_rule_line(x) for x in case.get("add", [])) if r]
    return packset_from_documents(docs, rules, PACKS.model_text)


def _matches(violation: delegation.Violation, line: str, want: dict[str, str]) -> bool:
    for key in ("kind", "role", "action", "other"):
        if key in want and getattr(violation, key) != want[key]:
            return False
    return "text" not in want or want["text"] in line


@pytest.mark.parametrize("case", _cases())
def test_verifier_case(case: dict[str, Any]) -> None:
    packset = edited(case)
    pack = packset.packs[case["pack"]]
    report = delegation.verify_pack(packset, case["pack"])
    found = [(v, v.describe(pack)) for v in report.violations]
    listing = "\n".join(line for _, line in found) or "(none)"
    if case["expect"] == "PASS":
        assert report.ok, f"expected PASS, got:\n{listing}"
    else:
        for want in case["expect"]:
            assert any(_matches(v, line, want) for v, line in found), f"missing {want} in:\n{listing}"
    for unwanted in case.get("absent", []):
        hits = [line for v, line in found if _matches(v, line, unwanted)]
        assert not hits, f"unexpected {unwanted}:\n" + "\n".join(hits)


def test_validation_problems_are_the_printed_counterexamples() -> None:
    """What policy validation refuses with is the verifier's list, one line per counterexample."""
    case = {"pack": "classroom", "add": ["p, 75, role:classroom:admin, remove_users, any, -, allow"]}
    packset = edited(case)
    lines = [v.describe(packset.packs["classroom"]) for v in delegation.verify_pack(packset, "classroom").violations]
    assert lines and delegation.problems(packset, ["classroom"]) == lines


def test_every_case_file_is_collected() -> None:
    assert len(_cases()) >= 20 and {p.stem for p in CASES_DIR.glob("*.yaml")} >= {
        "rank",
        "exceptions",
        "features",
        "scopes",
        "inheritance",
    }


def test_verify_and_render_name_every_pack_and_the_verdict() -> None:
    """`flask policy verify`'s output: a header per pack, the delegation table, PASS or FAIL with the lines."""
    reports = delegation.verify(PACKS, ["classroom", "no-such-pack", "todo"])
    assert [r.pack for r in reports] == ["classroom", "todo"]
    assert [r.pack for r in delegation.verify(PACKS)] == list(PACKS.packs)
    text = delegation.render(PACKS, reports)
    classroom = reports[0]
    assert text.startswith(
        f"== classroom: {len(classroom.grants)} delegations, {classroom.checks} decisions asked "
        f"over {classroom.situations} situations x feature states\n"
    )
    assert "  admin  may grant learner          via change_user_roles [rank]\n" in text
    assert "  owner  may grant owner            via change_user_roles [rank] (grants: exception)\n" in text
    assert "  admin  may grant teacher          via change_user_roles [rank]\n" in text
    assert "(grants: exception)" not in text.split("owner  may grant owner")[0]
    assert "  PASS classroom\n" in text and text.endswith("  PASS todo\n") and "== todo: 0 delegations" in text
    bad = edited({"pack": "classroom", "add": ["p, 75, role:classroom:admin, remove_users, any, -, allow"]})
    report = delegation.verify_pack(bad, "classroom")
    out = delegation.render(bad, [report])
    lines = [v.describe(bad.packs["classroom"]) for v in report.violations]
    assert f"  FAIL classroom: {len(lines)} counterexample(s)\n" in out
    assert out.endswith("".join(f"  - {line}\n" for line in lines))


def test_problems_are_remembered_per_pack_content() -> None:
    """The verdict is cached per (model, pack document, pack rules): same content, same answer; else a new one."""
    delegation._VERDICTS.clear()
    assert delegation.problems(PACKS) == [] and len(delegation._VERDICTS) == len(PACKS.packs)
    assert delegation.problems(PACKS, ["no-such-pack"]) == []
    bad_rules = edited({"pack": "classroom", "add": ["p, 75, role:classroom:admin, remove_users, any, -, allow"]})
    bad_doc = edited({"pack": "classroom", "grants": [{"role": "owner", "may_grant": ["owner"], "why": ""}]})
    first = delegation.problems(bad_rules, ["classroom"])
    assert first and delegation.problems(bad_rules, ["classroom"]) == first
    assert delegation.problems(bad_doc, ["classroom"]) not in ([], first)
    keys = {
        delegation._fingerprint(PACKS, "classroom"),
        delegation._fingerprint(bad_rules, "classroom"),
        delegation._fingerprint(bad_doc, "classroom"),
        delegation._fingerprint(PackSet(PACKS.packs, PACKS.model_text + "\n# another model"), "classroom"),
        delegation._fingerprint(PACKS, "todo"),
    }
    assert len(keys) == 5 and delegation._fingerprint(PACKS, "classroom") == delegation._fingerprint(
        load_packs(ROOT / "policy", ROOT / "model.conf"), "classroom"
    )
    # Bounded: a full cache is emptied before the next verdict is stored.
    delegation._VERDICTS.clear()
    delegation.problems(bad_rules, ["classroom"])
    for n in range(delegation._VERDICTS_LIMIT - 1):
        delegation._VERDICTS[f"filler-{n}"] = ()
    assert delegation.problems(bad_rules, ["classroom"]) == first  # a hit: nothing stored, nothing cleared
    assert len(delegation._VERDICTS) == delegation._VERDICTS_LIMIT
    delegation.problems(bad_doc, ["classroom"])
    assert len(delegation._VERDICTS) == 1
