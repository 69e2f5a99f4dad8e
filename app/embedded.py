"""Embedded, read-only enforcement for Python services that cannot afford a network hop.

Stock Casbin reads the live policy: ``casbin.Enforcer("model.conf", sqlalchemy_adapter.Adapter(url))``,
the adapter with its own row class, plus what the service registers on its own enforcer (the rank
functions ``rankAbove``/``mayGrant`` from the stored pack documents, the ``*`` domain pattern of ``g``,
and the platform domains' packs). The table is the adapter's ``casbin_rule`` (``id, ptype, v0..v5``):
the p-rule has six values (``priority, sub, act, scope, feature, eft``), and the pack check is
``g4(r.dom, p.sub)`` over ``g4, ws:<slug>, pack:<id>`` and ``g4, pack:<id>, <role>`` rows. The stock row
class prints two- and three-value rules with trailing empty values; pycasbin cuts them to the role
definition's arity. Rules load in id order (the adapter's filtered load), the order the service applies
them, which decides between equal priorities.

It decides exactly like the service (``tests/test_embedded.py`` compares them on the demo data), on a
snapshot: :meth:`EmbeddedEnforcer.refresh` builds a new enforcer when the policy revision moved
(never a reload in place, see DESIGN §4). Nothing is written: auto-save is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import casbin
import sqlalchemy_adapter
from casbin.util import key_match
from casbin.util.log import disabled_logging
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy_adapter.adapter import Filter

from app.authz import AccessRequest, ResourceFacts, validate_request
from app.authz.enforcer import rank_functions
from app.authz.identifiers import PLATFORM_DOMAIN
from app.authz.packs import Pack, is_pack_rule, packset_from_documents
from app.config import DATA
from app.models import CasbinRule, PolicyHead, PolicyPack

MODEL = (DATA / "model.conf").resolve()


def live_packs(url_or_engine: str | Engine, model_path: Path | str = MODEL) -> dict[str, Pack]:
    """The live packs: stored documents with their stored pack rules (what the rank functions read)."""
    model_text = Path(model_path).read_text(encoding="utf-8")
    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with Session(engine) as session:
            documents = {p.pack: dict(p.document) for p in session.scalars(select(PolicyPack))}
            rows = session.scalars(select(CasbinRule).order_by(CasbinRule.id)).all()
            rules = [r.as_rule() for r in rows if is_pack_rule(r.as_rule())]
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()
    return dict(packset_from_documents(documents, rules, model_text).packs)


def _revision(engine: Engine) -> int:
    with Session(engine) as session:
        head = session.scalars(select(PolicyHead.revision)).first()
    return int(head or 0)


def stock_enforcer(url_or_engine: str | Engine, model_path: Path | str = MODEL) -> casbin.Enforcer:
    """Stock ``casbin.Enforcer`` over the live ``casbin_rule`` table through ``sqlalchemy_adapter``,
    with the service's matcher functions registered; auto-save off (read-only)."""
    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    disabled_logging()
    adapter = sqlalchemy_adapter.Adapter(engine, filtered=True, create_table=False)
    e = casbin.Enforcer(str(model_path), adapter)
    e.enable_auto_save(False)
    packs = live_packs(engine, model_path)
    for name, fn in rank_functions(packs).items():
        e.add_function(name, fn)
    e.add_named_domain_matching_func("g", key_match)
    e.load_filtered_policy(Filter())  # every rule, ordered by id
    # Platform domains (platform:<pack>, where platform roles are granted) are the service's own, in memory.
    for pack in packs.values():
        e.add_named_grouping_policy("g4", f"platform:{pack.id}", pack.key)
    return e


class EmbeddedEnforcer:
    """A read-only stock enforcer on the live policy, asked the way the service asks its engine."""

    def __init__(self, url_or_engine: str | Engine, model_path: Path | str = MODEL) -> None:
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.model_path = model_path
        self.revision = _revision(self.engine)
        self.enforcer = stock_enforcer(self.engine, model_path)

    def close(self) -> None:
        """Release the database connections (of an engine this object created from a URL)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> EmbeddedEnforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> bool:
        """Build a new enforcer if the policy revision moved (then swap); True if it did."""
        revision = _revision(self.engine)
        if revision == self.revision:
            return False
        enforcer = stock_enforcer(self.engine, self.model_path)
        self.enforcer, self.revision = enforcer, revision
        return True

    def current_role(self, member: str, domain: str) -> str:
        """The target member's current role, a fact the service fills itself (the request's is ignored)."""
        if not member:
            return ""
        if domain.startswith("platform:"):
            prefix = f"role:{domain[len('platform:') :]}:"
            rules = self.enforcer.get_filtered_named_grouping_policy("g", 0, member, "", PLATFORM_DOMAIN)
            held = sorted(r[1] for r in rules if r[1].startswith(prefix))
            return held[0] if held else ""
        rules = self.enforcer.get_filtered_named_grouping_policy("g", 0, member, "", domain)
        return str(rules[0][1]) if rules else ""

    def enforce(self, req: AccessRequest) -> bool:
        """Allowed? Invalid requests are denied before Casbin sees them (as the service does)."""
        if validate_request(req) is not None:
            return False
        obj = req.obj
        role = self.current_role(obj.member, req.domain)
        facts: dict[str, Any] = {name: getattr(obj, name) for name in obj.__slots__}
        facts["role"] = role
        return bool(self.enforcer.enforce(req.subject, req.domain, facts, req.action))

    def check(self, subject: str, domain: str, action: str, obj: ResourceFacts | None = None) -> bool:
        """Allowed? ``subject`` ``user:<id>``, ``domain`` ``ws:<slug>``, ``obj`` prefixed like the service's."""
        return self.enforce(AccessRequest(subject, domain, obj or ResourceFacts(), action))
