"""A Casbin role manager that answers like pycasbin's DomainManager with a ``*`` domain pattern.

pycasbin builds one RoleManager object per domain on first use, and with a domain-matching
function it scans every domain to build it (tens of ms at 100,000 workspaces). This one keeps
one packed array per domain, with links in domain ``*`` visible from every domain, and answers
``has_link`` by a breadth-first walk of at most ``max_hierarchy_level`` steps, exactly as
pycasbin's walk does. It never creates entries for names it is asked about.

Memory (a million memberships: dicts of strings cost ~260 bytes a membership): every name is an
int code (:class:`Names`): a user key ``user:<n>`` is n itself and is never stored as a string, any
other name (role, scope, workspace, pack, feature) is interned once in a table shared by the
engine's role managers. A domain's links are one ``array('q')`` of (child, parent) code pairs
sorted by child: 16 bytes a link plus one array header per domain, no per-link object. Arrays are
replaced, never resized, once loaded (copy on write), so a reader never sees a half-made change.
There is no reverse index: nothing on the decision path asks "who holds this role"; ``get_users``
(the RoleManager interface) scans instead. ``links`` is a read-only mapping view with the old
shape (domain → name → sorted parents) for the readers outside the decision path.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping

from casbin.rbac import RoleManager

from .identifiers import PLATFORM_DOMAIN

_EMPTY: tuple[str, ...] = ()
_BASE = -(1 << 62)  # interned names are _BASE, _BASE + 1, ...: below every user number, in interning order
_USER_DIGITS = 18  # user:<n> with n < 10**18 is coded as n
_SCAN = 64  # array length up to which a lookup scans instead of bisecting
_NOWHERE = -1  # no name's code (users are >= 0, interned names near -2**62): a domain nobody named

Parents = tuple[str, ...]


def user_number(name: str) -> int | None:
    """n for the canonical user key ``user:<n>`` (decimal, no leading zero), else None."""
    if name.startswith("user:"):
        digits = name[5:]
        canonical = digits[:1] != "0" or digits == "0"
        if canonical and digits.isdigit() and digits.isascii() and len(digits) <= _USER_DIGITS:
            return int(digits)
    return None


class Names:
    """The engine's table of names ↔ int codes: ``user:<n>`` ↔ n, any other string ↔ an interned code."""

    __slots__ = ("_code", "_text")

    def __init__(self) -> None:
        self._code: dict[str, int] = {}
        self._text: list[str] = []
        self.code("")
        self.code(PLATFORM_DOMAIN)

    def __len__(self) -> int:
        return len(self._text)

    def code(self, name: str) -> int:
        """The code of name, interning it if new."""
        n = user_number(name)
        if n is not None:
            return n
        c = self._code.get(name)
        if c is None:
            c = self._code[name] = _BASE + len(self._text)
            self._text.append(name)
        return c

    def find(self, name: object) -> int | None:
        """The code of name if it has one (nothing is interned), else None."""
        if name.__class__ is not str:
            return None
        c = self._code.get(name)
        return c if c is not None else user_number(name)

    def text(self, code: int) -> str:
        """The name of a code."""
        return self._text[code - _BASE] if code < 0 else f"user:{code}"


def _run(links: array[int], child: int) -> tuple[int, int]:
    """[i, j): the pair indexes of child's links in a domain's array (empty, not where it would go, if none)."""
    if len(links) <= _SCAN:  # a workspace's few links: one scan in C beats a strided view and a bisect
        if child not in links:
            return 0, 0
        k = links.index(child)
        if not k & 1:  # the first occurrence is a child, so the first of its run
            j = k + 2
            while j < len(links) and links[j] == child:
                j += 2
            return k >> 1, j >> 1
    return _place(links, child)


def _place(links: array[int], child: int) -> tuple[int, int]:
    """[i, j): the pair indexes of child's links in a domain's array, or where they would go."""
    children = memoryview(links)[::2]
    i = bisect_left(children, child)
    j = i
    n = len(children)
    while j < n and children[j] == child:
        j += 1
    return i, j


class IndexedRoleManager(RoleManager):  # type: ignore[misc]
    """Role links per domain in packed arrays; ``*`` links apply to every domain."""

    __slots__ = ("max_hierarchy_level", "names", "_links", "_star", "_none")

    def __init__(self, max_hierarchy_level: int = 10, names: Names | None = None) -> None:
        self.max_hierarchy_level = max_hierarchy_level
        self.names = names if names is not None else Names()
        self._links: dict[int, array[int]] = {}
        self._star = self.names.code(PLATFORM_DOMAIN)
        self._none = self.names.code("")

    @property
    def links(self) -> LinksView:
        """domain → name → sorted parents, read-only (decoded on access)."""
        return LinksView(self)

    def __len__(self) -> int:
        """The number of links held."""
        return sum(len(a) >> 1 for a in self._links.values())

    # -- writes -------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every link."""
        self._links = {}

    def add_link(self, name1: str, name2: str, *domain: str) -> None:
        """name1 inherits name2 in domain (or in every domain for ``*``)."""
        names = self.names
        dom = names.code(domain[0] if domain else "")
        child, parent = names.code(name1), names.code(name2)
        old = self._links.get(dom)
        if old is None:
            self._links[dom] = array("q", (child, parent))
            return
        i, j = _place(old, child)
        if any(old[2 * k + 1] == parent for k in range(i, j)):
            return
        new = old[: 2 * j]
        new.append(child)
        new.append(parent)
        new.extend(old[2 * j :])
        self._links[dom] = new

    def link(self, name1: str, name2: str, dom: str) -> None:
        """``add_link`` in place, the domain a plain argument ("" for none): the loading fast path
        (nobody reads while the engine loads); a link after the last of its domain is an append."""
        names = self.names
        d = names.code(dom)
        child, parent = names.code(name1), names.code(name2)
        arr = self._links.get(d)
        if arr is None:
            self._links[d] = array("q", (child, parent))
            return
        last = arr[-2]
        if child > last or (child == last and parent != arr[-1] and not self._holds(arr, child, parent)):
            arr.append(child)
            arr.append(parent)
            return
        i, j = _place(arr, child)
        if any(arr[2 * k + 1] == parent for k in range(i, j)):
            return
        arr.insert(2 * j, parent)
        arr.insert(2 * j, child)

    @staticmethod
    def _holds(arr: array[int], child: int, parent: int) -> bool:
        i, j = _run(arr, child)
        return any(arr[2 * k + 1] == parent for k in range(i, j))

    def trim(self) -> None:
        """Drop the spare capacity arrays keep for appends (after a load)."""
        for d, arr in self._links.items():
            self._links[d] = array("q", arr)

    def delete_link(self, name1: str, name2: str, *domain: str) -> None:
        """Remove the link if present (a missing link is not an error here)."""
        names = self.names
        dom, child, parent = names.find(domain[0] if domain else ""), names.find(name1), names.find(name2)
        old = self._links.get(dom) if dom is not None else None
        if old is None or child is None or parent is None:
            return
        i, j = _run(old, child)
        for k in range(i, j):
            if old[2 * k + 1] == parent:
                if len(old) == 2:
                    del self._links[dom]  # type: ignore[arg-type]
                else:
                    new = old[: 2 * k]
                    new.extend(old[2 * k + 2 :])
                    self._links[dom] = new  # type: ignore[index]
                return

    # -- reads --------------------------------------------------------------------------
    def _codes(self, child: int, dom: int) -> tuple[int, ...]:
        """Parent codes of child in exactly dom."""
        arr = self._links.get(dom)
        if arr is None:
            return ()
        i, j = _run(arr, child)
        if j - i == 1:
            return (arr[2 * i + 1],)
        return tuple(arr[2 * k + 1] for k in range(i, j))

    def _decode(self, codes: tuple[int, ...]) -> Parents:
        text = self.names.text
        if len(codes) == 1:
            return (text(codes[0]),)
        return tuple(sorted(text(c) for c in codes))

    def _child(self, name: str) -> int | None:
        """find(name), users first (the commonest name asked about)."""
        if name.__class__ is not str:
            return None
        if name.startswith("user:"):
            n = user_number(name)
            if n is not None:
                return n
        return self.names._code.get(name)

    def _dom(self, domain: str) -> int | None:
        """find(domain), interned names first (a domain is never a user but may be named like one)."""
        dom = self.names._code.get(domain) if domain.__class__ is str else None
        return dom if dom is not None else self.names.find(domain)

    def _direct(self, child: int, dom: int | None) -> Parents:
        arr = self._links.get(dom) if dom is not None else None
        if arr is None:
            return _EMPTY
        if len(arr) <= _SCAN:  # the decision path's case, inline: a workspace's few links
            if child not in arr:
                return _EMPTY
            k = arr.index(child)
            if not k & 1 and (k + 2 >= len(arr) or arr[k + 2] != child):
                p = arr[k + 1]
                return (self.names._text[p - _BASE] if p < 0 else f"user:{p}",)
        i, j = _run(arr, child)
        return self._decode(tuple(arr[2 * k + 1] for k in range(i, j))) if j > i else _EMPTY

    def direct(self, name: str, domain: str = "") -> Parents:
        """Parents linked to name in exactly this domain (no ``*``), sorted."""
        child = self._child(name)
        return self._direct(child, self._dom(domain)) if child is not None else _EMPTY

    def direct_and_platform(self, name: str, domain: str) -> tuple[Parents, Parents]:
        """(``direct(name, domain)``, ``direct(name, "*")``; () for the latter if domain is ``*``): a
        decision's subject, its name read once."""
        child = self._child(name)
        if child is None:
            return _EMPTY, _EMPTY
        own = self._direct(child, self._dom(domain))
        return own, self._direct(child, self._star) if domain != PLATFORM_DOMAIN else _EMPTY

    def _parents(self, child: int, dom: int) -> tuple[int, ...]:
        own = self._codes(child, dom)
        if dom != self._star:
            extra = self._codes(child, self._star)
            if extra:
                return (*own, *extra) if own else extra
        return own

    def has_link(self, name1: str, name2: str, *domain: str) -> bool:
        """True if name1 reaches name2 in domain within max_hierarchy_level - 1 links."""
        if name1 == name2:
            return True
        names = self.names
        start, goal = names.find(name1), names.find(name2)
        dom = names.find(domain[0] if domain else "")
        if start is None or goal is None:
            return False
        if dom is None:
            dom = _NOWHERE  # a domain nobody named holds nothing; its ``*`` links still apply
        first = self._parents(start, dom)
        if not first:
            return False
        if goal in first:
            return True
        seen = {start, *first}
        frontier = first
        for _ in range(self.max_hierarchy_level - 2):
            nxt: list[int] = []
            for n in frontier:
                for parent in self._parents(n, dom):
                    if parent == goal:
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
        names = self.names
        start = names.find(name)
        dom = names.find(domain)
        if start is None:
            return set()
        dom = _NOWHERE if dom is None else dom
        seen: set[int] = set()
        frontier = {start}
        for _ in range(self.max_hierarchy_level - 1):
            nxt = set()
            for n in frontier:
                for parent in self._parents(n, dom):
                    if parent not in seen and parent != start:
                        seen.add(parent)
                        nxt.add(parent)
            if not nxt:
                break
            frontier = nxt
        return {names.text(c) for c in seen}

    def get_roles(self, name: str, *domain: str) -> list[str]:
        """Direct parents of name in domain, ``*`` links included."""
        names = self.names
        child = names.find(name)
        dom = names.find(domain[0] if domain else "")
        if child is None:
            return []
        return sorted({names.text(c) for c in self._parents(child, _NOWHERE if dom is None else dom)})

    def get_users(self, name: str, *domain: str) -> list[str]:
        """Direct children of name in domain, ``*`` links included (a scan: off the decision path)."""
        names = self.names
        parent = names.find(name)
        dom = names.find(domain[0] if domain else "")
        if parent is None:
            return []
        out: set[str] = set()
        for d in {dom, self._star}:
            arr = self._links.get(d) if d is not None else None
            for k in range(0, len(arr) if arr is not None else 0, 2):
                if arr[k + 1] == parent:  # type: ignore[index]
                    out.add(names.text(arr[k]))  # type: ignore[index]
        return sorted(out)

    def print_roles(self) -> None:
        """Nothing to print; kept for the interface."""


class BucketView(Mapping[str, Parents]):
    """One domain's links as name → sorted parents (a view of the array it was made from)."""

    __slots__ = ("_rm", "_arr")

    def __init__(self, rm: IndexedRoleManager, arr: array[int]) -> None:
        self._rm = rm
        self._arr = arr

    def __getitem__(self, name: str) -> Parents:
        child = self._rm.names.find(name)
        if child is not None:
            i, j = _run(self._arr, child)
            if j > i:
                return self._rm._decode(tuple(self._arr[2 * k + 1] for k in range(i, j)))
        raise KeyError(name)

    def _children(self) -> Iterator[int]:
        arr = self._arr
        last = None
        for k in range(0, len(arr), 2):
            if arr[k] != last:
                last = arr[k]
                yield last

    def __iter__(self) -> Iterator[str]:
        text = self._rm.names.text
        return (text(c) for c in self._children())

    def __len__(self) -> int:
        return sum(1 for _ in self._children())


class LinksView(Mapping[str, BucketView]):
    """A role manager's links as domain → :class:`BucketView` (the shape of the dicts it replaced)."""

    __slots__ = ("_rm",)

    def __init__(self, rm: IndexedRoleManager) -> None:
        self._rm = rm

    def __getitem__(self, domain: str) -> BucketView:
        dom = self._rm.names.find(domain)
        arr = self._rm._links.get(dom) if dom is not None else None
        if arr is None:
            raise KeyError(domain)
        return BucketView(self._rm, arr)

    def __iter__(self) -> Iterator[str]:
        text = self._rm.names.text
        return (text(d) for d in list(self._rm._links))

    def __len__(self) -> int:
        return len(self._rm._links)
