"""A Casbin role manager that answers like pycasbin's DomainManager with a ``*`` domain pattern.

pycasbin builds one RoleManager object per domain on first use, and with a domain-matching
function it scans every domain to build it (tens of ms at 100,000 workspaces). This one keeps
plain dicts: ``domain -> name -> set(parents)``, with links in domain ``*`` visible from every
domain, and answers ``has_link`` by a breadth-first walk of at most ``max_hierarchy_level``
steps, exactly as pycasbin's walk does. It never creates entries for names it is asked about.
"""

from __future__ import annotations

from casbin.rbac import RoleManager

from .identifiers import PLATFORM_DOMAIN

_EMPTY: frozenset[str] = frozenset()


class IndexedRoleManager(RoleManager):  # type: ignore[misc]
    """Role links per domain in dicts; ``*`` links apply to every domain."""

    def __init__(self, max_hierarchy_level: int = 10) -> None:
        self.max_hierarchy_level = max_hierarchy_level
        self.links: dict[str, dict[str, set[str]]] = {}
        self.reverse: dict[str, dict[str, set[str]]] = {}

    # -- writes -------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every link."""
        self.links = {}
        self.reverse = {}

    def add_link(self, name1: str, name2: str, *domain: str) -> None:
        """name1 inherits name2 in domain (or in every domain for ``*``)."""
        dom = domain[0] if domain else ""
        self.links.setdefault(dom, {}).setdefault(name1, set()).add(name2)
        self.reverse.setdefault(dom, {}).setdefault(name2, set()).add(name1)

    def delete_link(self, name1: str, name2: str, *domain: str) -> None:
        """Remove the link if present (a missing link is not an error here)."""
        dom = domain[0] if domain else ""
        for index, a, b in ((self.links, name1, name2), (self.reverse, name2, name1)):
            bucket = index.get(dom)
            if bucket is None:
                continue
            targets = bucket.get(a)
            if targets is None:
                continue
            targets.discard(b)
            if not targets:
                del bucket[a]
            if not bucket:
                del index[dom]

    # -- reads --------------------------------------------------------------------------
    def direct(self, name: str, domain: str = "") -> frozenset[str] | set[str]:
        """Parents linked to name in exactly this domain (no ``*``)."""
        bucket = self.links.get(domain)
        if bucket is None:
            return _EMPTY
        return bucket.get(name, _EMPTY)

    def _parents(self, name: str, dom: str) -> set[str]:
        out: set[str] = set()
        bucket = self.links.get(dom)
        if bucket is not None:
            out |= bucket.get(name, _EMPTY)
        if dom != PLATFORM_DOMAIN:
            star = self.links.get(PLATFORM_DOMAIN)
            if star is not None:
                out |= star.get(name, _EMPTY)
        return out

    def has_link(self, name1: str, name2: str, *domain: str) -> bool:
        """True if name1 reaches name2 in domain within max_hierarchy_level - 1 links."""
        if name1 == name2:
            return True
        dom = domain[0] if domain else ""
        frontier = {name1}
        seen = {name1}
        for _ in range(self.max_hierarchy_level - 1):
            nxt: set[str] = set()
            for n in frontier:
                for parent in self._parents(n, dom):
                    if parent == name2:
                        return True
                    if parent not in seen:
                        seen.add(parent)
                        nxt.add(parent)
            if not nxt:
                return False
            frontier = nxt
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
        return sorted(self._parents(name, domain[0] if domain else ""))

    def get_users(self, name: str, *domain: str) -> list[str]:
        """Direct children of name in domain, ``*`` links included."""
        dom = domain[0] if domain else ""
        out: set[str] = set()
        for d in {dom, PLATFORM_DOMAIN}:
            bucket = self.reverse.get(d)
            if bucket is not None:
                out |= bucket.get(name, _EMPTY)
        return sorted(out)

    def children(self, name: str, domain: str) -> frozenset[str] | set[str]:
        """Names linked directly to name in exactly this domain."""
        bucket = self.reverse.get(domain)
        if bucket is None:
            return _EMPTY
        return bucket.get(name, _EMPTY)

    def print_roles(self) -> None:
        """Nothing to print; kept for the interface."""
