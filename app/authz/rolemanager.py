"""A Casbin role manager that answers like pycasbin's DomainManager with a ``*`` domain pattern.

pycasbin builds one RoleManager object per domain on first use, and with a domain-matching
function it scans every domain to build it (tens of ms at 100,000 workspaces). This one keeps
plain dicts: ``domain -> name -> parents``, with links in domain ``*`` visible from every
domain, and answers ``has_link`` by a breadth-first walk of at most ``max_hierarchy_level``
steps, exactly as pycasbin's walk does. It never creates entries for names it is asked about.

Memory: at a million memberships a ``set`` per user (216 bytes) dominates, so parents are kept
as small sorted tuples (56 bytes for one). There is no reverse index: nothing on the decision
path asks "who holds this role", and keeping one cost half the engine's heap; ``get_users`` (the
RoleManager interface) scans instead.
"""

from __future__ import annotations

import sys

from casbin.rbac import RoleManager

from .identifiers import PLATFORM_DOMAIN

_EMPTY: tuple[str, ...] = ()
_intern = sys.intern

Parents = tuple[str, ...]


class IndexedRoleManager(RoleManager):  # type: ignore[misc]
    """Role links per domain in dicts; ``*`` links apply to every domain."""

    __slots__ = ("max_hierarchy_level", "links")

    def __init__(self, max_hierarchy_level: int = 10) -> None:
        self.max_hierarchy_level = max_hierarchy_level
        self.links: dict[str, dict[str, Parents]] = {}

    # -- writes -------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every link."""
        self.links = {}

    def add_link(self, name1: str, name2: str, *domain: str) -> None:
        """name1 inherits name2 in domain (or in every domain for ``*``)."""
        self.link(name1, name2, domain[0] if domain else "")

    def link(self, name1: str, name2: str, dom: str) -> None:
        """``add_link`` with the domain as a plain argument ("" for none): the loading fast path."""
        dom = _intern(dom)
        name1 = _intern(name1)
        name2 = _intern(name2)
        bucket = self.links.get(dom)
        if bucket is None:
            bucket = self.links[dom] = {}
        old = bucket.get(name1, _EMPTY)
        if name2 in old:
            return
        bucket[name1] = (name2,) if not old else tuple(sorted((*old, name2)))

    def delete_link(self, name1: str, name2: str, *domain: str) -> None:
        """Remove the link if present (a missing link is not an error here)."""
        dom = domain[0] if domain else ""
        bucket = self.links.get(dom)
        if bucket is not None:
            old = bucket.get(name1)
            if old is not None and name2 in old:
                rest = tuple(p for p in old if p != name2)
                if rest:
                    bucket[name1] = rest
                else:
                    del bucket[name1]
                if not bucket:
                    del self.links[dom]

    # -- reads --------------------------------------------------------------------------
    def direct(self, name: str, domain: str = "") -> Parents:
        """Parents linked to name in exactly this domain (no ``*``), sorted."""
        bucket = self.links.get(domain)
        if bucket is None:
            return _EMPTY
        return bucket.get(name, _EMPTY)

    def _parents(self, name: str, dom: str) -> Parents:
        bucket = self.links.get(dom)
        own = bucket.get(name, _EMPTY) if bucket is not None else _EMPTY
        if dom != PLATFORM_DOMAIN:
            star = self.links.get(PLATFORM_DOMAIN)
            if star is not None:
                extra = star.get(name)
                if extra:
                    return (*own, *extra) if own else extra
        return own

    def has_link(self, name1: str, name2: str, *domain: str) -> bool:
        """True if name1 reaches name2 in domain within max_hierarchy_level - 1 links."""
        if name1 == name2:
            return True
        dom = domain[0] if domain else ""
        first = self._parents(name1, dom)
        if not first:
            return False
        if name2 in first:
            return True
        seen = {name1, *first}
        frontier = first
        for _ in range(self.max_hierarchy_level - 2):
            nxt: list[str] = []
            for n in frontier:
                for parent in self._parents(n, dom):
                    if parent == name2:
                        return True
                    if parent not in seen:
                        seen.add(parent)
                        nxt.append(parent)
            if not nxt:
                return False
            frontier = tuple(nxt)
        return False

    def reachable(self, name: str, domain: str = "") -> set[str]:
        """Every name reachable from name in domain (name itself excluded)."""
        seen: set[str] = set()
        frontier = {name}
        for _ in range(self.max_hierarchy_level - 1):
            nxt = set()
            for n in frontier:
                for parent in self._parents(n, domain):
                    if parent not in seen and parent != name:
                        seen.add(parent)
                        nxt.add(parent)
            if not nxt:
                break
            frontier = nxt
        return seen

    def get_roles(self, name: str, *domain: str) -> list[str]:
        """Direct parents of name in domain, ``*`` links included."""
        return sorted(set(self._parents(name, domain[0] if domain else "")))

    def get_users(self, name: str, *domain: str) -> list[str]:
        """Direct children of name in domain, ``*`` links included (a scan: off the decision path)."""
        dom = domain[0] if domain else ""
        out: set[str] = set()
        for d in {dom, PLATFORM_DOMAIN}:
            for child, parents in self.links.get(d, {}).items():
                if name in parents:
                    out.add(child)
        return sorted(out)

    def print_roles(self) -> None:
        """Nothing to print; kept for the interface."""
