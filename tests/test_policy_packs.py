"""Every case of policy/tests/*_test.yaml, run against the real model.conf and policy/ packs."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.authz import PolicyEngine
from app.authz.packs import load_packs
from app.authz.policytest import PolicyCase, build_request, load_suite, suite_files

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")
SUITES = [load_suite(p) for p in suite_files(ROOT / "policy")]
ENGINES = {s.file: PolicyEngine(PACKSET, s.facts) for s in SUITES}
CASES = [c for s in SUITES for c in s.cases]


def test_every_pack_has_a_suite() -> None:
    """A pack without policy tests is not done."""
    tested = {Path(s.file).name.removesuffix("_test.yaml") for s in SUITES}
    assert set(PACKSET.packs) <= tested


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_case(case: PolicyCase) -> None:
    """The decision as the surfaces ask it (PolicyEngine.decide) equals the case's expectation (and reason)."""
    decision = ENGINES[case.file].decide(build_request(case))
    assert ("allow" if decision.allowed else "deny") == case.expect, decision
    if case.reason:
        assert decision.reason == case.reason
