"""Service tokens are bound to what they may ask about (issue 21, reproduction 5), on both backends.

A token names workspaces, one pack's platform, or — asked for explicitly — every workspace; any
question outside that binding is a 403 problem on every decision surface (check and batch, on the
WSGI fast path and the views; permissions, assignable roles, who-can; AuthZEN evaluation(s) and
the three searches), and the service meta-pack answers only a token bound to it by name.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.api import decision_wsgi
from app.errors import NotFoundError, ValidationError
from app.extensions import db
from app.policy import tokens
from tests.factories import create_workspace
from tests.test_decision_api import World, get, post
from tests.test_decision_api import world as world  # noqa: F401 - the fixture

BOUND = "token-not-bound"


def token(name: str, **binding: Any) -> str:
    """A committed token's secret, bound as given."""
    _, secret = tokens.create_token(db.session(), name, **binding)
    db.session.commit()
    return secret


def refused(status: int, out: dict[str, Any]) -> bool:
    return status == 403 and str(out.get("type", "")).endswith(f"/{BOUND}")


@pytest.fixture
def fast(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The endpoints the WSGI fast path answered itself (it is asked for every plain check)."""
    taken: list[str] = []
    answer = decision_wsgi.DecisionFastPath.answer

    def spy(self: Any, environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
        out = answer(self, environ, start_response)
        if out is not None:
            taken.append(decision_wsgi._ENDPOINTS[environ["PATH_INFO"]])
        return out

    monkeypatch.setattr(decision_wsgi.DecisionFastPath, "answer", spy)
    return taken


def check(ws: str, subject: str, action: str = "view_dashboard") -> dict[str, Any]:
    return {"subject": subject, "workspace": ws, "action": action}


# -- reproduction 5 ------------------------------------------------------------------------------------
def test_a_workspace_token_decides_only_there_on_both_paths(client: FlaskClient, world: World, fast: list[str]) -> None:
    secret = token("classroom-only", workspace="classroom-demo")
    mine = check("classroom-demo", "owner@classroom.example", "create_groups")
    foreign = check("simulations-demo", "owner@simulations.example")
    for _ in range(2):  # the first request teaches the process the token, the second may take the fast path
        status, out = post(client, "/v1/check", secret, mine)
        assert status == 200 and out["allowed"] is True
    assert fast == ["decision.check"]  # the fast path knows the token and answers inside the binding
    for body in (
        foreign,
        {**foreign, "workspace": "ws:simulations-demo"},
        {**foreign, "workspace": "platform:simulations"},
    ):
        for _ in range(2):
            status, out = post(client, "/v1/check", secret, body)
            assert refused(status, out), out
            assert out["workspace"] == body["workspace"] and "index" not in out
    assert fast == ["decision.check"]  # ... and never outside it


def test_one_foreign_item_refuses_the_whole_batch_naming_its_index(
    client: FlaskClient, world: World, fast: list[str]
) -> None:
    secret = token("classroom-only", workspace="classroom-demo")
    mine = check("classroom-demo", "owner@classroom.example", "create_groups")
    for _ in range(2):
        status, out = post(client, "/v1/check/batch", secret, {"checks": [mine, mine]})
        assert status == 200 and [r["allowed"] for r in out["results"]] == [True, True]
        status, out = post(client, "/v1/check/batch", secret, {"checks": [mine, mine, check("skills-demo", "x"), mine]})
        assert refused(status, out) and out["index"] == 2 and out["at"] == "checks[2].workspace", out
    assert fast == ["decision.check_batch"]


@pytest.mark.parametrize("path", ["/v1/permissions", "/v1/assignable-roles", "/v1/who-can"])
def test_reads_outside_the_binding_are_refused(client: FlaskClient, world: World, path: str) -> None:
    secret = token("classroom-only", workspace="classroom-demo")
    who = {"/v1/permissions": "subject", "/v1/assignable-roles": "actor"}.get(path)
    params: dict[str, Any] = {who: "owner@classroom.example"} if who else {"action": "create_groups"}
    status, out = get(client, path, secret, workspace="classroom-demo", **params)
    assert status == 200, out
    params = {who: "owner@simulations.example"} if who else {"action": "manage_billing_and_subscription"}
    status, out = get(client, path, secret, workspace="simulations-demo", **params)
    assert refused(status, out), out
    assert "owner@simulations.example" not in str(out)


AZ = "/access/v1"


def _az(client: FlaskClient, url: str, secret: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = client.post(url, json=body, headers={"Authorization": f"Bearer {secret}"})
    return resp.status_code, resp.get_json(silent=True) or {}


def test_authzen_outside_the_binding_is_refused(client: FlaskClient, world: World) -> None:
    secret = token("classroom-only", workspace="classroom-demo")
    user = {"type": "user", "id": "owner@classroom.example"}
    here = {"subject": user, "action": {"name": "create_groups"}, "resource": {"type": "workspace", "id": "x"}}
    status, out = _az(client, f"{AZ}/evaluation", secret, here)  # the token's only workspace is its default
    assert status == 200 and out["decision"] is True, out
    there = {**here, "context": {"workspace": "simulations-demo"}}
    assert refused(*_az(client, f"{AZ}/evaluation", secret, there))
    props = {**here, "resource": {"type": "workspace", "id": "x", "properties": {"workspace": "simulations-demo"}}}
    assert refused(*_az(client, f"{AZ}/evaluation", secret, props))
    status, out = _az(
        client, f"{AZ}/evaluations", secret, {**here, "evaluations": [{}, {"context": {"workspace": "service"}}]}
    )
    assert refused(status, out) and out["index"] == 1 and out["at"] == "evaluations[1]", out
    status, out = _az(client, f"{AZ}/evaluations", secret, {**here, "evaluations": [{}, {}]})
    assert status == 200 and [e["decision"] for e in out["evaluations"]] == [True, True]

    search = {"action": {"name": "manage_billing_and_subscription"}, "context": {"workspace": "simulations-demo"}}
    subjects = {**search, "subject": {"type": "user"}, "resource": {"type": "workspace", "id": "x"}}
    status, out = _az(client, f"{AZ}/search/subject", secret, subjects)
    assert refused(status, out) and "simulations.example" not in str(out), out
    resources = {**search, "subject": user, "resource": {"type": "workspace"}}
    assert refused(*_az(client, f"{AZ}/search/resource", secret, resources))
    actions = {
        "subject": user,
        "resource": {"type": "workspace", "id": "x"},
        "context": {"workspace": "simulations-demo"},
    }
    assert refused(*_az(client, f"{AZ}/search/action", secret, actions))
    status, out = _az(client, f"{AZ}/search/action", secret, {**actions, "context": {}})
    assert status == 200 and {"name": "create_groups"} in out["results"], out


# -- what each kind of binding reaches --------------------------------------------------------------------
def test_the_service_meta_pack_answers_only_a_token_naming_it(client: FlaskClient, world: World) -> None:
    create_workspace("service", "service")
    ask = check("service", "policy_admin@service.example", "apply_policy_change")
    wide = token("wide", all_workspaces=True)
    assert refused(*post(client, "/v1/check", wide, ask))
    assert refused(*post(client, "/v1/check", wide, {**ask, "workspace": "platform:service"}))
    assert refused(*get(client, "/v1/who-can", wide, workspace="service", action="apply_policy_change"))
    status, out = post(client, "/v1/check", wide, check("simulations-demo", "owner@simulations.example"))
    assert status == 200 and out["allowed"] is True  # every other workspace
    for name, binding in (("meta", {"workspace": "service"}), ("meta-platform", {"platform": "service"})):
        secret = token(name, **binding)
        status, out = post(client, "/v1/check", secret, ask)
        assert status == 200 and out["reason"] == "unknown_subject", out
        assert refused(*post(client, "/v1/check", secret, check("simulations-demo", "owner@simulations.example")))


def test_a_platform_token_reaches_its_pack_only(client: FlaskClient, world: World) -> None:
    create_workspace("simulations-two", "simulations")  # a workspace of the pack made after the token counts too
    secret = token("sims-platform", platform="simulations")
    for ws in ("simulations-demo", "simulations-two", "platform:simulations"):
        status, out = post(client, "/v1/check", secret, check(ws, "admin@platform.example"))
        assert status == 200, out
    for ws in ("classroom-demo", "platform:classroom", "no-such-workspace"):
        assert refused(*post(client, "/v1/check", secret, check(ws, "admin@platform.example")))


def test_unknown_workspaces_are_refused_unless_the_token_is_wide(client: FlaskClient, world: World) -> None:
    """A bound token cannot tell an unknown workspace from a foreign one (no existence oracle)."""
    bound = token("two", workspaces=["classroom-demo", "skills-demo"])
    wide = token("wide", all_workspaces=True)
    for ws in ("no-such-workspace", "Bad Slug!", ""):
        assert refused(*post(client, "/v1/check", bound, check(ws, "owner@classroom.example")))
    status, out = post(client, "/v1/check", wide, check("no-such-workspace", "owner@classroom.example"))
    assert status == 200 and out["reason"] == "unknown_workspace"
    status, out = post(
        client, "/v1/check", bound, check("skills-demo", "owner@skills.example", "configure_hr_integrations")
    )
    assert status == 200


def test_a_token_must_name_its_binding(app: Flask, world: World) -> None:
    session = db.session()
    for binding in (
        {},
        {"workspace": "classroom-demo", "all_workspaces": True},
        {"platform": "academy", "workspaces": ["academy-demo"]},
    ):
        with pytest.raises(ValidationError):
            tokens.create_token(session, "t", **binding)
    with pytest.raises(NotFoundError):
        tokens.create_token(session, "t", workspaces=["classroom-demo", "nope"])
    with pytest.raises(NotFoundError):
        tokens.create_token(session, "t", platform="no_such_pack")
    row, _ = tokens.create_token(session, "two", workspaces=["classroom-demo", "ws:skills-demo"])
    assert row.binding == "ws:classroom-demo ws:skills-demo" and row.workspace is None  # no default with two
    row, _ = tokens.create_token(session, "one", workspaces=["ws:classroom-demo"])
    assert row.binding == "ws:classroom-demo" and row.workspace == "classroom-demo"
    row, _ = tokens.create_token(session, "wide", all_workspaces=True, default_workspace="skills-demo")
    assert row.binding == "*" and row.workspace == "skills-demo"
    with pytest.raises(ValidationError):  # a default outside the binding
        tokens.create_token(session, "t", platform="simulations", default_workspace="skills-demo")


def test_unreadable_bindings_bind_nothing() -> None:
    for text in ("", "classroom-demo", "platform:", "platform:Bad Pack", "* ws:x"):
        domains, platform, wide = tokens.parse_binding(text)
        ident = tokens.TokenIdentity(1, "t", None, domains, platform, wide)
        assert not any(ident.may_ask(d, p) for d, p in (("ws:classroom-demo", "classroom"), ("ws:x", None)))


def test_cli_create_and_list_show_bindings(app: Flask, world: World) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["token", "create", "nothing"]).exit_code != 0  # a binding is required
    for args in (
        ["a", "--workspace", "classroom-demo", "--workspace", "skills-demo"],
        ["b", "--platform", "academy"],
        ["c", "--all-workspaces"],
    ):
        result = runner.invoke(args=["token", "create", *args])
        assert result.exit_code == 0 and result.output.strip().startswith("lat_"), result.output
    assert runner.invoke(args=["token", "create", "d", "--platform", "academy", "--all-workspaces"]).exit_code != 0
    listed = runner.invoke(args=["token", "list"]).output
    assert "a\tactive" in listed and "bound to workspaces classroom-demo,skills-demo" in listed
    assert "bound to platform academy" in listed and "bound to all workspaces (not service)" in listed
    assert "[migrated]" not in listed
