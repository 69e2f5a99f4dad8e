"""The compact engine and directory structures against plain dict/set oracles, by random operations.

``IndexedRoleManager`` keeps a domain's links as one packed array of name codes and ``Directory``
keeps the users of its load in a ``UserTable`` of flat arrays; every answer must equal what a
dict of sets (and the old dict-of-strings directory) gives after the same operations.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from app.authz.rolemanager import IndexedRoleManager, Names, user_number
from app.policy.directory import Directory, UserTable

DOMAINS = ["ws:a", "ws:b", "ws:c-1", "*", ""]
NAMES = [
    "user:0",
    "user:1",
    "user:7",
    "user:42",
    "user:2147483647",
    "user:007",  # not canonical: interned as a string, never the same as user:7
    "user:abc",
    "user:",
    "role:classroom:owner",
    "role:classroom:admin",
    "role:classroom:teacher",
    "role:classroom:learner",
    "group:s0",
    "team:s1",
    "pack:classroom",
]


class Oracle:
    """domain → name → set of parents, walked like pycasbin (``*`` links in every domain)."""

    def __init__(self, max_level: int) -> None:
        self.max_level = max_level
        self.links: dict[str, dict[str, set[str]]] = {}

    def add(self, a: str, b: str, dom: str) -> None:
        self.links.setdefault(dom, {}).setdefault(a, set()).add(b)

    def delete(self, a: str, b: str, dom: str) -> None:
        parents = self.links.get(dom, {}).get(a)
        if parents is not None and b in parents:
            parents.discard(b)
            if not parents:
                del self.links[dom][a]
            if not self.links[dom]:
                del self.links[dom]

    def parents(self, a: str, dom: str) -> set[str]:
        out = set(self.links.get(dom, {}).get(a, ()))
        if dom != "*":
            out |= self.links.get("*", {}).get(a, set())
        return out

    def reachable(self, a: str, dom: str, steps: int) -> set[str]:
        seen: set[str] = set()
        frontier = {a}
        for _ in range(steps):
            frontier = {p for n in frontier for p in self.parents(n, dom)} - seen - {a}
            seen |= frontier
        return seen

    def has_link(self, a: str, b: str, dom: str) -> bool:
        return a == b or b in self.reachable(a, dom, self.max_level - 1)

    def users(self, b: str, dom: str) -> list[str]:
        return sorted({a for d in {dom, "*"} for a, ps in self.links.get(d, {}).items() if b in ps})


def _same(rm: IndexedRoleManager, oracle: Oracle) -> None:
    assert {d: dict(b.items()) for d, b in rm.links.items()} == {
        d: {a: tuple(sorted(ps)) for a, ps in b.items()} for d, b in oracle.links.items()
    }
    assert len(rm) == sum(len(ps) for b in oracle.links.values() for ps in b.values())
    for dom in [*DOMAINS, "ws:unknown"]:
        for a in NAMES:
            assert rm.direct(a, dom) == tuple(sorted(oracle.links.get(dom, {}).get(a, ()))), (a, dom)
            assert rm.get_roles(a, dom) == sorted(oracle.parents(a, dom))
            assert rm.get_users(a, dom) == oracle.users(a, dom)
            assert rm.reachable(a, dom) == oracle.reachable(a, dom, oracle.max_level - 1)
            for b in NAMES:
                assert rm.has_link(a, b, dom) == oracle.has_link(a, b, dom), (a, b, dom)


@pytest.mark.parametrize("seed", range(6))
def test_role_manager_equals_a_dict_of_sets(seed: int) -> None:
    rnd = random.Random(seed)
    max_level = rnd.choice([3, 4, 10])
    rm, oracle = IndexedRoleManager(max_level), Oracle(max_level)
    for _ in range(120):  # the load: in-place appends and inserts, duplicates ignored
        a, b, dom = rnd.choice(NAMES), rnd.choice(NAMES), rnd.choice(DOMAINS)
        rm.link(a, b, dom)
        oracle.add(a, b, dom)
    rm.seal()
    _same(rm, oracle)
    for step in range(200):  # after it: copy-on-write adds and deletes (present or not)
        a, b, dom = rnd.choice(NAMES), rnd.choice(NAMES), rnd.choice(DOMAINS)
        if rnd.random() < 0.5:
            rm.add_link(a, b, *([dom] if dom else []))
            oracle.add(a, b, dom)
        else:
            rm.delete_link(a, b, *([dom] if dom else []))
            oracle.delete(a, b, dom)
        if step % 40 == 0:
            _same(rm, oracle)
    _same(rm, oracle)


def test_role_manager_writes_after_the_load_replace_arrays_readers_hold() -> None:
    rm = IndexedRoleManager(10)
    for u in range(1, 6):
        rm.link(f"user:{u}", "role:classroom:learner", "ws:a")
    rm.seal()
    held = rm.links["ws:a"]  # a reader's view of the array it read
    rm.add_link("user:3", "role:classroom:teacher", "ws:a")
    rm.delete_link("user:1", "role:classroom:learner", "ws:a")
    assert dict(held.items()) == {f"user:{u}": ("role:classroom:learner",) for u in range(1, 6)}
    assert rm.links["ws:a"]["user:3"] == ("role:classroom:learner", "role:classroom:teacher")
    assert "user:1" not in rm.links["ws:a"] and len(rm.links["ws:a"]) == 4


def test_role_manager_truth_is_len_without_walking_every_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Casbin's ``g`` asks ``not rm`` on every call of a memo miss: the answer is ``len(rm) > 0``,
    found without :meth:`IndexedRoleManager.__len__`'s walk over every domain (it cost ~1 ms a
    call at W = 100,000 and put 20-50 ms into decisions after every pack edit)."""
    from casbin.util.builtin_operators import generate_g_function

    rnd = random.Random(11)
    rm = IndexedRoleManager(10)
    assert not rm and len(rm) == 0
    for _ in range(300):
        a, b, dom = rnd.choice(NAMES), rnd.choice(NAMES), rnd.choice(DOMAINS[:3])
        (rm.add_link if rnd.random() < 0.6 else rm.delete_link)(a, b, dom)
        assert bool(rm) == (len(rm) > 0)
    for a in NAMES:
        for b in NAMES:
            for dom in DOMAINS[:3]:
                rm.delete_link(a, b, dom)
    assert not rm and len(rm) == 0
    rm.add_link("user:1", "role:classroom:teacher", "ws:a")

    def walk(self: IndexedRoleManager) -> int:
        raise AssertionError("g walked every domain")

    monkeypatch.setattr(IndexedRoleManager, "__len__", walk)
    g = generate_g_function(rm)
    assert g("user:1", "role:classroom:teacher", "ws:a") is True
    assert g("user:2", "role:classroom:teacher", "ws:a") is False


def test_role_manager_loads_a_big_domain_out_of_order() -> None:
    rm, oracle = IndexedRoleManager(10), Oracle(10)
    ids = list(range(1, 3001))
    random.Random(3).shuffle(ids)
    for u in ids:
        rm.link(f"user:{u}", f"role:classroom:r{u % 3}", "ws:big")
        oracle.add(f"user:{u}", f"role:classroom:r{u % 3}", "ws:big")
    assert rm.direct("user:7", "ws:big") == ("role:classroom:r1",)  # staged links, read while loading
    rm.add_link("user:7", "role:classroom:r0", "ws:big")  # a link added the ordinary way during the load
    oracle.add("user:7", "role:classroom:r0", "ws:big")
    rm.seal()
    assert {a: ps for a, ps in rm.links["ws:big"].items()} == {
        a: tuple(sorted(ps)) for a, ps in oracle.links["ws:big"].items()
    }
    assert list(rm.links["ws:big"]) == [f"user:{u}" for u in range(1, 3001)]  # sorted by code


def test_names_code_users_as_numbers_and_intern_the_rest() -> None:
    names = Names()
    assert [user_number(s) for s in ("user:0", "user:12", "user:" + "9" * 18)] == [0, 12, 10**18 - 1]
    for s in ("user:007", "user:", "user:-1", "user:1 ", "user:\u0661", "user:²", "user:" + "1" * 19, "users:1"):
        assert user_number(s) is None, s
    assert names.find("role:x") is None and names.find(None) is None and names.find(7) is None
    codes = {s: names.code(s) for s in NAMES}
    assert len(set(codes.values())) == len(NAMES)
    assert all(names.text(c) == s for s, c in codes.items())
    assert all(names.find(s) == c for s, c in codes.items())
    assert codes["user:42"] == 42 and codes["user:007"] < 0


# -- the directory ------------------------------------------------------------------------------


class DirectoryOracle:
    """The directory of dicts it replaced: id → (email, ext), email → id, ext → id."""

    def __init__(self, rows: Iterable[tuple[int, str, str | None]]) -> None:
        self.ids: dict[int, tuple[str, str | None]] = {}
        self.emails: dict[str, int] = {}
        self.exts: dict[str, int] = {}
        for uid, email, ext in rows:
            self.put(uid, email, ext)

    def put(self, uid: int, email: str, ext: str | None) -> None:
        email = email.lower()
        old = self.ids.get(uid)
        self.ids[uid] = (email, ext)
        self.emails[email] = uid
        if ext is not None:
            self.exts[ext] = uid
        if old is not None:
            if old[0] != email and self.emails.get(old[0]) == uid:
                del self.emails[old[0]]
            if old[1] is not None and old[1] != ext and self.exts.get(old[1]) == uid:
                del self.exts[old[1]]


def _same_directory(d: Directory, o: DirectoryOracle, emails: set[str], exts: set[str], ids: range) -> None:
    assert len(d) == len(o.ids)
    assert sorted(d.rows()) == sorted((uid, e, x) for uid, (e, x) in o.ids.items())
    for uid in ids:
        want = f"user:{uid}" if uid in o.ids else None
        assert (uid in d) == (uid in o.ids)
        assert d.key(("id", uid)) == want and d.lookup(uid) == want and d.lookup(f"user:{uid}") == want
        assert d.lookup(f"user:{uid:03d}") == want  # a non-canonical id reference: read by refs.user_ref
    for email in emails:
        want = f"user:{o.emails[email]}" if email in o.emails else None
        assert d.lookup(email) == want and d.lookup(email.upper()) == want, email
    for ext in exts:
        assert d.lookup(ext) == (f"user:{o.exts[ext]}" if ext in o.exts else None), ext


@pytest.mark.parametrize("seed", range(5))
def test_directory_equals_the_dicts_it_replaced(seed: int) -> None:
    """Random loads, puts and changes; emails and external ids unique among users at every moment,
    as the users table's unique columns keep them (the order revisions are applied in)."""
    rnd = random.Random(seed)
    ids = range(1, 80)
    pool_e = [f"p{i}@Example.org" if i % 3 else f"ü{i}@exämple.org" for i in range(120)]
    pool_x = [f"sso|{i:04d}" for i in range(60)]

    def free(pool: list[str], taken: set[str]) -> str:
        return rnd.choice([v for v in pool if v.lower() not in taken])

    first = rnd.sample(list(ids), 40)  # the load: not in id order
    rows: list[tuple[int, str, str | None]] = []
    taken_e: set[str] = set()
    taken_x: set[str] = set()
    for uid in first:
        email = free(pool_e, taken_e).lower()
        ext = free(pool_x, taken_x) if rnd.random() < 0.5 else None
        taken_e.add(email)
        taken_x |= {ext} if ext else set()
        rows.append((uid, email, ext))
    d, o = Directory.from_rows(rows, {}), DirectoryOracle(rows)
    emails = {e.lower() for e in pool_e}
    _same_directory(d, o, emails, set(pool_x), ids)
    for step in range(150):
        uid = rnd.choice(ids)
        taken_e = {e for u, (e, _) in o.ids.items() if u != uid}
        taken_x = {x for u, (_, x) in o.ids.items() if u != uid and x}
        old = o.ids.get(uid)
        kind = rnd.choice(["put", "email", "ext"])
        if kind == "put" or old is None:
            email, ext = free(pool_e, taken_e), free(pool_x, taken_x) if rnd.random() < 0.5 else None
            d.put(uid, email, ext)
            o.put(uid, email, ext)
        elif kind == "email":
            email = free(pool_e, taken_e)
            d.changed(uid, "email", email)
            o.put(uid, email, old[1])
        else:
            ext = free(pool_x, taken_x) if rnd.random() < 0.7 else None
            d.changed(uid, "ext", ext)
            o.put(uid, old[0], ext)
        if step % 25 == 0:
            _same_directory(d, o, emails, set(pool_x), ids)
    _same_directory(d, o, emails, set(pool_x), ids)
    again = Directory.from_rows(d.rows(), {})  # a snapshot of it: the same answers
    _same_directory(again, o, emails, set(pool_x), ids)


def test_user_table_keeps_the_last_row_of_an_id_and_finds_by_hash() -> None:
    table = UserTable([(5, "a@x.org", None), (2, "b@x.org", "ext-b"), (5, "c@x.org", "ext-c")])
    assert list(table.rows()) == [(2, "b@x.org", "ext-b"), (5, "c@x.org", "ext-c")]
    assert table.find("email", "c@x.org") == 5 and table.find("email", "a@x.org") is None
    assert table.find("ext", "ext-b") == 2 and table.find("ext", "b@x.org") is None
    assert len(table) == 2 and 5 in table and 3 not in table
    big = UserTable((uid, f"u{uid}@bench.example", f"sso|{uid}" if uid % 2 == 0 else None) for uid in range(1, 5001))
    assert all(big.find("email", f"u{uid}@bench.example") == uid for uid in range(1, 5001, 7))
    assert all(big.find("ext", f"sso|{uid}") == (uid if uid % 2 == 0 else None) for uid in range(1, 5001, 7))
    with pytest.raises(ValueError):
        UserTable([(1, "x" * 70_000 + "@x.org", None)])
