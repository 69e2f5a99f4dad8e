"""A Casbin role manager that answers like pycasbin's DomainManager with a ``*`` domain pattern.

pycasbin builds one RoleManager object per domain on first use, and with a domain-matching
function it scans every domain to build it (tens of ms at 100,000 workspaces). This one keeps
one packed array per domain, with links in domain ``*`` visible from every domain, and answers
``has_link`` by a breadth-first walk of at most ``max_hierarchy_level`` steps, exactly as
pycasbin's walk does. It never creates entries for names it is asked about.

Memory (a million memberships: dicts of strings cost ~260 bytes a membership): every name is an
int code (:class:`Names`): a user key ``user:<n>`` is n itself and is never stored as a string, any
other name (role, scope, workspace, pack, feature) is interned once in a table shared by the
engine's role managers. A domain's links are one ``array('q')``: its children's codes sorted, then
their parents' in the same order (a lookup bisects the array itself): 16 bytes a link plus one array
header per domain, no per-link object (83 bytes a membership at 1M, engine included; 256 before).
A load stages (child, parent) pairs, appended in place, and :meth:`IndexedRoleManager.seal` lays
them out; after it arrays are replaced, never resized (copy on write), so a reader never sees a
half-made change. The price: a name is decoded from its code and a lookup is a bisect, not a dict
probe (docs/scale.md, "Memory").
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
    """[i, j): the indexes of child's links in a sealed domain array ``children + parents`` (child i's
    parent at ``n + i``), or where they would go."""
    n = len(links) >> 1
    i = bisect_left(links, child, 0, n)
    j = i
    while j < n and links[j] == child:
        j += 1
    return i, j


def _staged_run(links: array[int], child: int) -> tuple[int, int]:
    """[i, j): the pair indexes of child's links in a staging array of (child, parent) pairs."""
    children = memoryview(links)[::2]
    i = bisect_left(children, child)
    j = i
    n = len(children)
    while j < n and children[j] == child:
        j += 1
    return i, j


def _seal(pairs: array[int]) -> array[int]:
    """A staging array of sorted (child, parent) pairs as the sealed ``children + parents``."""
    out = pairs[0::2]
    out.extend(pairs[1::2])
    return out


class IndexedRoleManager(RoleManager):  # type: ignore[misc]
    """Role links per domain in packed arrays; ``*`` links apply to every domain."""

    __slots__ = ("max_hierarchy_level", "names", "_links", "_staging", "_sealed", "_star")

    def __init__(self, max_hierarchy_level: int = 10, names: Names | None = None) -> None:
        self.max_hierarchy_level = max_hierarchy_level
        self.names = names if names is not None else Names()
        self._links: dict[int, array[int]] = {}  # domain → sorted children, then their parents
        self._staging: dict[int, array[int]] = {}  # domain → sorted (child, parent) pairs: a load under way
        self._sealed = False  # after seal, link is add_link
        self._star = self.names.code(PLATFORM_DOMAIN)

    @property
    def links(self) -> LinksView:
        """domain → name → sorted parents, read-only (decoded on access)."""
        return LinksView(self)

    def __len__(self) -> int:
        """The number of links held (a walk over every domain: not on a decision's path)."""
        return sum(len(a) >> 1 for a in self._links.values())

    def __bool__(self) -> bool:
        """Whether any link is held, at the first domain that holds one. Casbin's ``g`` function asks
        ``not rm`` on every call; without this, truth fell back on :meth:`__len__`, a walk over
        every domain (~1 ms at W = 100,000) in each ``g`` call of a memo miss."""
        return any(self._links.values())

    # -- writes -------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every link."""
        self._links = {}
        self._staging = {}

    def add_link(self, name1: str, name2: str, *domain: str) -> None:
        """name1 inherits name2 in domain (or in every domain for ``*``)."""
        names = self.names
        dom = names.code(domain[0] if domain else "")
        child, parent = names.code(name1), names.code(name2)
        old = self._links.get(dom)
        if old is None:
            self._links[dom] = array("q", (child, parent))
            return
        n = len(old) >> 1
        i, j = _run(old, child)
        if any(old[n + k] == parent for k in range(i, j)):
            return
        new = old[:j]
        new.append(child)
        new.extend(old[j : n + j])
        new.append(parent)
        new.extend(old[n + j :])
        self._links[dom] = new

    def link(self, name1: str, name2: str, dom: str) -> None:
        """``add_link`` for a load, the domain a plain argument ("" for none): staged in place until
        :meth:`seal` (a link after the last of its domain is an append). Only :meth:`direct` reads
        staged links (what the engine asks while it loads)."""
        if self._sealed:
            self.add_link(name1, name2, dom)
            return
        names = self.names
        d = names.code(dom)
        child, parent = names.code(name1), names.code(name2)
        arr = self._staging.get(d)
        if arr is None:
            self._staging[d] = array("q", (child, parent))
            return
        last = arr[-2]
        if child > last or (child == last and parent != arr[-1] and not self._staged(arr, child, parent)):
            arr.append(child)
            arr.append(parent)
            return
        i, j = _staged_run(arr, child)
        if any(arr[2 * k + 1] == parent for k in range(i, j)):
            return
        arr.insert(2 * j, parent)
        arr.insert(2 * j, child)

    @staticmethod
    def _staged(arr: array[int], child: int, parent: int) -> bool:
        i, j = _staged_run(arr, child)
        return any(arr[2 * k + 1] == parent for k in range(i, j))

    def seal(self) -> None:
        """End a load: staged links join the others, every array exactly as long as it needs to be."""
        staging, self._staging, self._sealed = self._staging, {}, True
        for d, pairs in staging.items():
            held = self._links.get(d)
            if held is not None:  # links added the ordinary way during the load (a pack's, say)
                n = len(held) >> 1
                merged = sorted({*zip(pairs[0::2], pairs[1::2]), *zip(held[:n], held[n:])})
                pairs = array("q", [c for pair in merged for c in pair])
            self._links[d] = _seal(pairs)
        for d, arr in self._links.items():
            self._links[d] = array("q", arr)

    def delete_link(self, name1: str, name2: str, *domain: str) -> None:
        """Remove the link if present (a missing link is not an error here)."""
        names = self.names
        dom, child, parent = names.find(domain[0] if domain else ""), names.find(name1), names.find(name2)
        old = self._links.get(dom) if dom is not None else None
        if old is None or child is None or parent is None:
            return
        n = len(old) >> 1
        i, j = _run(old, child)
        for k in range(i, j):
            if old[n + k] == parent:
                if n == 1:
                    del self._links[dom]  # type: ignore[arg-type]
                else:
                    new = old[:k]
                    new.extend(old[k + 1 : n + k])
                    new.extend(old[n + k + 1 :])
                    self._links[dom] = new  # type: ignore[index]
                return

    # -- reads --------------------------------------------------------------------------
    def _codes(self, child: int, dom: int) -> tuple[int, ...]:
        """Parent codes of child in exactly dom."""
        arr = self._links.get(dom)
        if arr is None:
            return ()
        n = len(arr) >> 1
        i = bisect_left(arr, child, 0, n)
        if i == n or arr[i] != child:
            return ()
        if i + 1 == n or arr[i + 1] != child:
            return (arr[n + i],)
        j = i + 1
        while j < n and arr[j] == child:
            j += 1
        return tuple(arr[n + k] for k in range(i, j))

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

    def _direct(self, child: int, dom: int | None) -> Parents:
        arr = self._links.get(dom) if dom is not None else None
        if arr is None:
            return _EMPTY
        n = len(arr) >> 1
        i = bisect_left(arr, child, 0, n)
        if i == n or arr[i] != child:
            return _EMPTY
        if i + 1 == n or arr[i + 1] != child:  # the decision path's case: one role, one scope, one pack
            p = arr[n + i]
            return (self.names._text[p - _BASE] if p < 0 else f"user:{p}",)
        return self._decode(self._codes(child, dom))  # type: ignore[arg-type]

    def direct(self, name: str, domain: str = "") -> Parents:
        """Parents linked to name in exactly this domain (no ``*``), sorted (staged ones too, during a load)."""
        code = self.names._code
        child = code.get(name) if name.__class__ is str and not name.startswith("user:") else self._child(name)
        if child is None:
            return _EMPTY
        dom = code.get(domain) if domain.__class__ is str else None
        if dom is None:
            dom = self.names.find(domain)
        if not self._staging:
            return self._direct(child, dom)
        staged = self._staging.get(dom) if self._staging and dom is not None else None
        if staged is not None:
            i, j = _staged_run(staged, child)
            extra = {staged[2 * k + 1] for k in range(i, j)} | set(self._codes(child, dom))  # type: ignore[arg-type]
            return self._decode(tuple(extra)) if extra else _EMPTY
        return self._direct(child, dom)

    def direct_and_platform(self, name: str, domain: str) -> tuple[Parents, Parents]:
        """(``direct(name, domain)``, ``direct(name, "*")``; () for the latter if domain is ``*``): a
        decision's subject, its name read once."""
        child = self._child(name)
        if child is None:
            return _EMPTY, _EMPTY
        dom = self.names._code.get(domain) if domain.__class__ is str else None
        own = self._direct(child, dom if dom is not None else self.names.find(domain))
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
            n = len(arr) >> 1 if arr is not None else 0
            for k in range(n):
                if arr[n + k] == parent:  # type: ignore[index]
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
            arr = self._arr
            n = len(arr) >> 1
            i, j = _run(arr, child)
            if j > i:
                return self._rm._decode(tuple(arr[n + k] for k in range(i, j)))
        raise KeyError(name)

    def _children(self) -> Iterator[int]:
        arr = self._arr
        last = None
        for k in range(len(arr) >> 1):
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
