"""Demo data of DESIGN.md §6, loaded by ``flask seed``; running it twice changes nothing.

Everything goes in one transaction with one policy revision (or none when nothing is missing).
Every demo password is ``demo-password-1``: change it on any shared installation.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz import RuleChange
from app.authz.identifiers import PLATFORM_DOMAIN
from app.extensions import authz, db
from app.identity import users
from app.models import Group, GroupMember, Membership, User, Workspace
from app.policy import store as policy_store

PASSWORD = "demo-password-1"
WORKSPACES = {
    "simulations-demo": ("simulations", "Simulations demo"),
    "academy-demo": ("academy", "Academy demo"),
    "classroom-demo": ("classroom", "Classroom demo"),
    "skills-demo": ("skills", "Skills demo"),
    # The service's own meta-policy: policy_viewer/policy_editor/policy_admin@service.example
    "service": ("service", "Policy administration"),
}
# (email, workspace slug, role) beyond one member per role
EXTRA_MEMBERS = [
    ("learner2@classroom.example", "classroom-demo", "learner"),
    ("owner2@classroom.example", "classroom-demo", "owner"),
    ("manager@skills.example", "skills-demo", "member"),
    ("multi@example.com", "classroom-demo", "owner"),
    ("multi@example.com", "simulations-demo", "learner"),
]
PLATFORM = [
    ("admin@platform.example", "simulations", "admin"),
    ("operator@platform.example", "academy", "operator"),
    # beyond DESIGN.md §6: skills' account manager, who switches features per workspace
    ("account_manager@platform.example", "skills", "account_manager"),
]
# (workspace, kind, name, [(email, relation)])
UNITS = [
    (
        "classroom-demo",
        "group",
        "morning",
        [("teacher@classroom.example", "teacher"), ("learner@classroom.example", "learner")],
    ),
    ("classroom-demo", "group", "evening", [("learner2@classroom.example", "learner")]),
    (
        "skills-demo",
        "team",
        "sales",
        [
            ("manager@skills.example", "manager"),
            ("member@skills.example", "member"),
            ("author@skills.example", "member"),
        ],
    ),
]


class _Loader:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.handle = policy_store.begin_write(session, "seed", None, "flask seed: demo data")
        self.changes: list[RuleChange] = []
        self.created: dict[str, int] = {"users": 0, "workspaces": 0, "memberships": 0, "groups": 0, "links": 0}
        self._hash = ""

    def rule(self, *rule: str) -> None:
        if not policy_store.rule_exists(self.session, rule) and RuleChange("add", rule) not in self.changes:
            self.changes.append(RuleChange("add", rule))

    def user(self, email: str) -> User:
        u = users.by_email(self.session, email)
        if u is None:
            # One argon2 hash for every demo user: same password, and seeding stays fast.
            self._hash = self._hash or users.hash_password(PASSWORD)
            u = User(email=email, password_hash=self._hash, display_name=email.split("@")[0])
            self.session.add(u)
            self.session.flush()
            self.created["users"] += 1
        return u

    def workspace(self, slug: str, pack: str, name: str) -> Workspace:
        ws = self.session.scalar(select(Workspace).where(Workspace.slug == slug))
        if ws is None:
            ws = Workspace(slug=slug, name=name, pack=pack)
            self.session.add(ws)
            self.session.flush()
            self.created["workspaces"] += 1
        self.rule("g4", ws.key, f"pack:{pack}")
        return ws

    def member(self, ws: Workspace, email: str, role: str) -> None:
        u = self.user(email)
        m = self.session.scalar(select(Membership).where(Membership.workspace_id == ws.id, Membership.user_id == u.id))
        if m is None:
            self.session.add(Membership(workspace_id=ws.id, user_id=u.id, role=role, status="accepted"))
            self.created["memberships"] += 1
        self.rule("g", u.key, f"role:{ws.pack}:{role}", ws.key)

    def unit(self, ws: Workspace, kind: str, name: str, people: list[tuple[str, str]]) -> None:
        g = self.session.scalar(
            select(Group).where(Group.workspace_id == ws.id, Group.kind == kind, Group.name == name)
        )
        if g is None:
            g = Group(workspace_id=ws.id, kind=kind, name=name)
            self.session.add(g)
            self.session.flush()
            self.created["groups"] += 1
        for email, relation in people:
            u = self.user(email)
            exists = self.session.scalar(
                select(GroupMember.id).where(
                    GroupMember.group_id == g.id, GroupMember.user_id == u.id, GroupMember.relation == relation
                )
            )
            if exists is None:
                self.session.add(GroupMember(group_id=g.id, user_id=u.id, relation=relation))
                self.created["links"] += 1
            ptype = "g2" if relation in ("teacher", "manager") else "g3"
            self.rule(ptype, u.key, g.key, ws.key)


def load_demo() -> str:
    """Load DESIGN.md §6's demo data (idempotent); returns a one-paragraph summary."""
    session = db.session()
    packs = authz.engine.packset.packs
    skipped = [slug for slug, (pack, _) in WORKSPACES.items() if pack not in packs]
    try:
        loader = _Loader(session)
        spaces: dict[str, Workspace] = {}
        for slug, (pack_id, name) in WORKSPACES.items():
            if slug in skipped:
                continue
            ws = spaces[slug] = loader.workspace(slug, pack_id, name)
            for rdef in packs[pack_id].workspace_roles:
                loader.member(ws, f"{rdef.id}@{pack_id}.example", rdef.id)
        for email, slug, role in EXTRA_MEMBERS:
            if slug in spaces:
                loader.member(spaces[slug], email, role)
        for email, pack_id, role in PLATFORM:
            if pack_id in packs:
                loader.rule("g", loader.user(email).key, f"role:{pack_id}:{role}", PLATFORM_DOMAIN)
        for slug, kind, name, people in UNITS:
            if slug in spaces:
                loader.unit(spaces[slug], kind, name, people)
        if not loader.changes and not any(loader.created.values()):
            session.rollback()
            summary = "demo data already loaded; nothing changed"
        else:
            if loader.changes:
                policy_store.add_changes(session, loader.handle, loader.changes)
            session.commit()
            counts = ", ".join(f"{v} {k}" for k, v in loader.created.items())
            summary = f"demo data loaded: {counts}, {len(loader.changes)} rules (revision {loader.handle.number})"
    except Exception:
        session.rollback()
        raise
    if skipped:
        summary += f"; skipped {', '.join(skipped)} (pack not loaded)"
    return summary + f". Every demo password is {PASSWORD!r}; change it."
