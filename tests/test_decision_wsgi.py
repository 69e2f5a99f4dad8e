"""The WSGI-level fast path of the decision API answers exactly like the Flask views (both backends)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.api import decision, decision_wsgi
from app.extensions import authz, db
from tests.test_decision_api import World, make_token
from tests.test_decision_api import world as world  # noqa: F401 - the fixture

VIEW = {"workspace": "simulations-demo", "action": "view_dashboard"}
JSON = "application/json"


def _requests(world: World) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(path, content type, body, extra headers): plain ones the fast path takes, and everything else."""
    owner, learner = world.uid("simulations.owner"), world.uid("simulations.learner")
    good = {"Authorization": f"Bearer {world.token}"}
    one = {"subject": owner, **VIEW}
    batch = {"checks": [one, {"subject": learner, **VIEW}, {"subject": "nobody@example.com", **VIEW}]}
    out: list[tuple[str, str, bytes, dict[str, str]]] = []
    for body in (
        one,
        {"subject": world.email("simulations.owner"), **VIEW},
        {"subject": learner, "workspace": "simulations-demo", "action": "manage_billing_and_subscription"},
        {"subject": 999_999, **VIEW},
        {"subject": owner, "workspace": "no-such-workspace", "action": "view_dashboard"},
        {"subject": owner, "workspace": "Bad Slug!", "action": "view_dashboard"},
        {"subject": owner, **VIEW, "resource": {"type": "scenario", "id": 7, "attributes": {"owner": owner}}},
        {"subject": owner, **VIEW, "min_revision": 0},
        {"subject": owner, **VIEW, "min_revision": 10**9},  # past the head: the view's 422
        {"subject": True, **VIEW},  # the schema's 422
        {"subject": owner, **VIEW, "extra": 1},
    ):
        out.append(("/v1/check", JSON, orjson.dumps(body), good))
    out += [
        ("/v1/check/batch", JSON, orjson.dumps(batch), good),
        ("/v1/check/batch", JSON, orjson.dumps({"checks": [one] * 1001}), good),  # over BATCH_MAX_CHECKS: 413
        ("/v1/check/batch", JSON, orjson.dumps({"checks": [], "min_revision": 0}), good),
        ("/v1/check", "application/problem+json", orjson.dumps(one), good),
        ("/v1/check", "text/plain", orjson.dumps(one), good),  # 415
        ("/v1/check", JSON, b'{"subject": 1,', good),  # 400
        ("/v1/check", JSON, orjson.dumps(one), {}),  # 401
        ("/v1/check", JSON, orjson.dumps(one), {"Authorization": "Bearer lat_nope"}),
        ("/v1/check", JSON, orjson.dumps(one), {"Authorization": "Basic abc"}),
        ("/v1/check", JSON, orjson.dumps(one), {**good, "X-Request-ID": "trace-42"}),
        ("/v1/check", JSON, orjson.dumps(one), {**good, "X-Request-ID": "bad id with spaces"}),
        ("/v1/check?explain=true", JSON, orjson.dumps(one), good),
    ]
    return out


def _answers(client: FlaskClient, world: World) -> list[tuple[int, Any, dict[str, str]]]:
    out = []
    for path, ctype, body, headers in _requests(world):
        r = client.post(path, data=body, content_type=ctype, headers=headers)
        got = dict(r.headers)
        rid = got.pop("X-Request-ID")
        if headers.get("X-Request-ID") != "trace-42":
            assert re.fullmatch(r"[0-9a-f]{32}", rid), rid  # generated
        else:
            got["X-Request-ID"] = rid
        out.append((r.status_code, r.get_json(silent=True), got))
    return out


def test_fast_path_answers_exactly_like_the_views(
    app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(app.decision_fast_path, decision_wsgi.DecisionFastPath)
    taken: list[str] = []
    answer = decision_wsgi.DecisionFastPath.answer

    def spy(self: Any, environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
        got = answer(self, environ, start_response)
        if got is not None:
            taken.append(environ["PATH_INFO"])
        return got

    monkeypatch.setattr(decision_wsgi.DecisionFastPath, "answer", spy)
    fast = _answers(client, world)
    plain = len(taken)
    monkeypatch.setattr(app, "decision_fast_path", None)  # Flask only
    slow = _answers(client, world)
    assert len(taken) == plain
    for f, s in zip(fast, slow):
        assert f == s, sorted(set(f[2].items()) ^ set(s[2].items()))
    statuses = [status for status, _, _ in fast]
    assert {200, 400, 401, 413, 415, 422} <= set(statuses)
    # The plain ones (8 checks, 2 batches, the problem+json body, the two X-Request-ID variants) skipped
    # Flask, but the first: a token this process has not seen yet is looked up by the view.
    assert plain == 12, taken
    assert fast[0][1]["allowed"] is True and fast[0][2]["Content-Security-Policy"]


def test_the_servers_entry_answers_as_the_app_does(app: Flask, client: FlaskClient, world: World) -> None:
    """What app.serve hands granian (``LoggingFlask.entry``, a plain callable) answers every request of
    the set as calling the app object does: the same status, JSON and headers, twice over (the second
    time from the remembered answers)."""
    from werkzeug.test import Client

    entry = app.entry()  # type: ignore[attr-defined]
    assert not isinstance(entry, Flask) and callable(entry)
    through_entry = Client(entry)
    for _ in range(2):
        by_app = _answers(client, world)
        by_entry = _answers(through_entry, world)  # type: ignore[arg-type]
        assert by_entry == by_app
    assert {200, 400, 401, 413, 415, 422} <= {status for status, _, _ in by_entry}


def test_fast_path_records_the_views_metrics(app: Flask, client: FlaskClient, world: World) -> None:
    def count() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        pattern = r'authz_http_request_seconds_count\{endpoint="decision.check",status="200"\} ([0-9.e+]+)'
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    token = make_token("metrics")
    before = count()
    body = orjson.dumps({"subject": world.uid("simulations.owner"), **VIEW})
    for _ in range(3):
        assert (
            client.post(
                "/v1/check", data=body, content_type=JSON, headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 200
        )
    assert count() == before + 3


def test_switched_off_every_request_goes_through_flask(database_url: str) -> None:
    from tests.conftest import make_app

    app = make_app(database_url, DECISION_FAST_PATH=False)
    assert app.decision_fast_path is None


def _decision_metrics(client: FlaskClient) -> dict[str, float]:
    """authz_decisions_total and authz_decision_seconds_count series of /metrics, by their labels."""
    text = client.get("/metrics").get_data(as_text=True)
    found = re.findall(r"^(authz_decisions_total|authz_decision_seconds_count)(\{[^}]*\}) ([0-9.e+]+)$", text, re.M)
    return {name + labels: float(value) for name, labels, value in found}


def test_fast_path_counts_decisions_like_the_view(
    app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions by result and reason, and decision time counts, grow by the same amounts on both paths
    (the fast path records them in one visit to its thread's tallies, the view in three)."""
    owner, learner = world.uid("simulations.owner"), world.uid("simulations.learner")
    headers = {"Authorization": f"Bearer {world.token}"}
    asked = [
        ("/v1/check", {"subject": owner, **VIEW}),
        ("/v1/check", {"subject": "nobody@example.com", **VIEW}),
        ("/v1/check", {"subject": owner, "workspace": "Bad Slug!", "action": "view_dashboard"}),
        ("/v1/check/batch", {"checks": [{"subject": owner, **VIEW}, {"subject": learner, **VIEW}] * 3}),
        (
            "/v1/check/batch",
            {
                "checks": [
                    {"subject": 999_999, **VIEW},
                    {"subject": learner, "workspace": "nowhere", "action": "view_dashboard"},
                ]
            },
        ),
        ("/v1/check/batch", {"checks": []}),
    ]

    def grown() -> dict[str, float]:
        before = _decision_metrics(client)
        for path, body in asked:
            assert client.post(path, data=orjson.dumps(body), content_type=JSON, headers=headers).status_code == 200
        after = _decision_metrics(client)
        return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}

    client.post("/v1/check", data=orjson.dumps(asked[0][1]), content_type=JSON, headers=headers)  # token known
    fast = grown()
    monkeypatch.setattr(app, "decision_fast_path", None)  # Flask only
    slow = grown()
    assert fast == slow
    assert fast['authz_decisions_total{reason="unknown_subject",result="deny"}'] == 2
    assert fast['authz_decision_seconds_count{endpoint="batch"}'] == 8
    assert fast['authz_decision_seconds_count{endpoint="check"}'] == 3
    assert sum(v for k, v in fast.items() if k.startswith("authz_decisions_total")) == 11


def test_answers_are_the_encoders_bytes(app: Flask, world: World) -> None:
    """The JSON joined from each decision's cached bytes is what orjson writes for the whole answer."""
    owner, learner = world.uid("simulations.owner"), world.uid("simulations.learner")
    checks = [
        {"subject": owner, **VIEW},
        {"subject": learner, "workspace": "simulations-demo", "action": "manage_billing_and_subscription"},
        {"subject": "nobody@example.com", **VIEW},
        {"subject": owner, "workspace": "Bad Slug!", "action": "view_dashboard"},
    ]
    with app.app_context():
        eng = authz.engine

        def answered(endpoint: str, body: Any) -> decision.Answered:
            return decision.parse_and_decide(
                endpoint, orjson.dumps(body), 1000, lambda _rev: eng, lambda _ws, _eng: None
            )

        for _ in range(2):  # encoded, then from the cache
            batch = answered("decision.check_batch", {"checks": checks * 2})
            assert batch.json == orjson.dumps(decision.batch_payload(batch.decisions, eng.revision, False))
            assert {d.reason for d in batch.decisions} >= {"unknown_subject", "invalid_request"}
            for body in checks:
                one = answered("decision.check", body)
                assert one.json == orjson.dumps(one.decisions[0].as_dict())
        empty = answered("decision.check_batch", {"checks": []})
        assert empty.json == orjson.dumps({"results": [], "revision": eng.revision})

def test_a_decision_listener_refuses_everything_but_decisions(database_url: str) -> None:
    """DECISION_ONLY: every route outside the decision, AuthZEN, probe and metrics paths is a 404
    problem (none reaches its view, writes included); the decision paths reach theirs."""
    from tests.conftest import make_app

    app = make_app(database_url, DECISION_ONLY=True)
    client = app.test_client()
    rules = list(app.url_map.iter_rules())
    assert {r.rule for r in rules} >= decision_wsgi.DECISION_PATHS  # every path named is one the app has
    refused = 0
    for rule in rules:
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if path in decision_wsgi.DECISION_PATHS or path.startswith(decision_wsgi.DECISION_PREFIXES):
            assert path.startswith(("/v1/check", "/access/v1/")) or methods == ["GET"], rule  # reads only
            continue
        for method in methods:
            r = client.open(path, method=method, json={})
            assert r.status_code == 404 and r.content_type == "application/problem+json", (method, path)
            assert r.json is not None and r.json["instance"] == path
            refused += 1
    assert refused > 50
    assert client.post("/v1/check", json={}).status_code == 401  # the view's answer: no token
    assert client.get("/readyz").status_code in (200, 503)
    with app.app_context():
        db.engine.dispose()  # the pooled connections its requests opened
    # HAProxy's decide acl names the same paths (the probes and metrics are the servers' own).
    cfg = (Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg").read_text()
    acl = [line.split()[2:] for line in cfg.splitlines() if line.strip().startswith("acl decision")]
    exact = {p for words in acl if words[0] == "path" for p in words[1:]}
    prefixes = {p for words in acl if words[0] == "path_beg" for p in words[1:]}
    assert exact == decision_wsgi.DECISION_PATHS - {"/healthz", "/readyz", "/metrics"}
    assert prefixes == set(decision_wsgi.DECISION_PREFIXES)
