"""The import graph of app/: no circles between modules, function-level imports included, and at
most five ``app.*`` imports inside function bodies outside ``create_app`` (docs/architecture.md
lists each one with its reason).

The graph is read with ``ast`` (nothing is imported): an edge A → B for every ``import B`` /
``from B import x`` in A, at any depth (inside functions and ``if TYPE_CHECKING`` too), with
``from pkg import mod`` pointing at the submodule. Importing a submodule runs its package's
``__init__`` as well; those implicit edges are left out (the packages' ``__init__`` files import
nothing of app, except ``app/__init__.py``'s ``create_app``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
FUNCTION_IMPORTS_ALLOWED = 5


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    line: int
    function: str | None  # the outermost function the import sits in, None at module level


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module of the package at ``root``."""
    return {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imports(root: Path) -> list[Import]:
    """Every import of one module of the package by another, wherever it stands in the file."""
    mods = modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found: list[Import] = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def walk(node: ast.AST, function: str | None, name: str = name, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                inner = function
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    inner = function or child.name
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join(anchor + ([child.module] if child.module else []))
                    submodules = [f"{base}.{a.name}" for a in child.names]
                    targets = [t for t in submodules if t in mods]
                    if len(targets) < len(submodules):
                        targets.append(base)  # names defined in the module itself
                for target in targets:
                    resolved = resolve(target)
                    if resolved is not None and resolved != name:
                        found.append(Import(name, resolved, child.lineno, function))
                walk(child, inner)

        walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), None)
    return found


def graph(found: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in found:
        edges.setdefault(imp.module, set()).add(imp.target)
        edges.setdefault(imp.target, set())
    return edges


def find_cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module, as a path
    ``[a, b, …, a]``; [] when the graph has none. Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_circle(set(c), edges) for c in components]


def _circle(component: set[str], edges: Mapping[str, set[str]]) -> list[str]:
    """A shortest circle through the component's first module (breadth-first inside it)."""
    start = min(component)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if nxt in component and nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no circle through {start}")  # a strongly connected component has one


def function_imports(found: list[Import]) -> list[Import]:
    """Imports of app modules inside function bodies, except the application factory's."""
    return [i for i in found if i.function is not None and not (i.module == "app" and i.function == "create_app")]


# -- the finder, on a synthetic package -----------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_finder_reports_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from . import c\n",
            "c.py": "def f():\n    from pkg.a import x\n    return x\n",
            "d.py": "import pkg.a\n",
        },
    )
    found = imports(root)
    assert find_cycles(graph(found)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert [(i.module, i.target, i.function) for i in function_imports(found)] == [("pkg.c", "pkg.a", "f")]


def test_finder_reports_each_circle_and_none_in_a_tree(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "x.py": "from pkg.sub import y\n",
            "sub/__init__.py": "",
            "sub/y.py": "from ..x import thing\nfrom . import z\n",
            "sub/z.py": "import pkg.sub.w\n",
            "sub/w.py": "def g():\n    if True:\n        import pkg.sub.z\n",
            "tree.py": "from pkg import x\nfrom pkg.sub import z\n",
        },
    )
    assert sorted(find_cycles(graph(imports(root)))) == [
        ["pkg.sub.w", "pkg.sub.z", "pkg.sub.w"],
        ["pkg.sub.y", "pkg.x", "pkg.sub.y"],
    ]
    tree = _package(tmp_path / "t", {"__init__.py": "", "a.py": "from pkg import b\n", "b.py": "import os\n"})
    assert find_cycles(graph(imports(tree))) == []


# -- app/ ---------------------------------------------------------------------------------------
def test_app_has_no_import_cycles() -> None:
    cycles = find_cycles(graph(imports(APP)))
    assert cycles == [], "import circles: " + "; ".join(" → ".join(c) for c in cycles)


def test_function_level_imports_of_app_are_few_and_documented() -> None:
    inside = function_imports(imports(APP))
    listed = f"{len(inside)}: " + ", ".join(f"{i.module}:{i.line} ({i.function}) → {i.target}" for i in inside)
    assert len(inside) <= FUNCTION_IMPORTS_ALLOWED, listed
    doc = (APP.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for imp in inside:
        assert f"`{imp.module}.{imp.function}`" in doc, f"docs/architecture.md does not list {listed}"
