"""The package's structure rules that a reader relies on (issues 16 and 29).

- No module imports another package's private modules (``from ..io._convert import X``) nor a private name
  from another package (``from ..pipeline.detect import _identity``).  A *package* here is a subpackage
  of ``cryodet_dask`` (``io``, ``pipeline``, ...); the modules directly in ``cryodet_dask/`` form one more,
  the root.  Inside one package, modules may share private names.
- No import circle between modules.  The graph has an edge ``a -> b`` for every import in ``a`` of a
  module ``b`` of ``cryodet_dask`` (``from .x import name`` names module ``x``, or its submodule ``x.name``
  when there is one): imports at module level and inside functions alike (a function-level import only
  defers a circle, it does not remove it), but not those under ``if TYPE_CHECKING:`` (they never run).
  A name imported from a package is also an edge to the module that defines it, found through the
  package's own imports (those under ``TYPE_CHECKING`` included: a package that loads its names lazily
  lists them there).  The packages that an import loads on the way (``pipeline/__init__`` for
  ``pipeline.rundir``) are not edges: a module and the package ``__init__`` that re-exports it would
  otherwise always form a circle.
- No module in ``cryodet_dask/`` is over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cryodet_dask"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute module names of every ``from ... import`` in ``path`` (relative ones resolved)."""
    return [(node.lineno, name) for node, name in _import_nodes(path)]


def _import_nodes(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in ``path`` with the absolute name of the module it imports from."""
    parts = _module_name(path).split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node, name))
        elif isinstance(node, ast.Import):
            found.extend((node, a.name) for a in node.names)
    return found


def _unit(module: str) -> str:
    """The package a module of ``cryodet_dask`` belongs to: its subpackage, or ``""`` for the root."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return ""


def test_no_module_imports_another_packages_private_modules():
    """``from ..io import X``, never ``from ..io._convert import X``: a subpackage's private modules are its own."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = path.relative_to(PACKAGE).parts
        own = here[0] if len(here) > 1 else None  # the subpackage this module belongs to (None: the root)
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "cryodet_dask" or len(parts) < 3:
                continue
            sub, rest = parts[1], parts[2:]
            if sub != own and (PACKAGE / sub).is_dir() and any(p.startswith("_") for p in rest):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not bad, "private cross-package imports:\n" + "\n".join(bad)


def test_no_module_imports_another_packages_private_names():
    """``from ..pipeline import run_identity``, never ``from ..pipeline.detect import _identity``: what a
    package offers the others is public (and in its ``__all__``)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _unit(_module_name(path))
        for node, name in _import_nodes(path):
            if not isinstance(node, ast.ImportFrom) or name.split(".")[0] != "cryodet_dask" or _unit(name) == own:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not (alias.name.startswith("__") and alias.name.endswith("__"))
                if private:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {alias.name} from {name}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``cryodet_dask`` it imports (see the module docstring for what counts)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def type_checking(node: ast.If) -> bool:
        t = node.test
        return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
            isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")

    def imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            return [node]
        children = node.orelse if isinstance(node, ast.If) and type_checking(node) else ast.iter_child_nodes(node)
        return [i for child in children for i in imports(child)]  # nested blocks, functions and classes

    def base(module: str, path: Path, node: ast.ImportFrom) -> str:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if not node.level:
            return node.module or ""
        return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))

    origin: dict[str, dict[str, str]] = {}  # package -> name -> the module its __init__ imports it from
    for module, path in modules.items():
        if path.name == "__init__.py":
            origin[module] = {(a.asname or a.name): base(module, path, node)
                              for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
                              for a in node.names}

    def defined_in(package: str, name: str) -> str | None:
        found, seen = None, set()
        while package in origin and name in origin[package] and package not in seen:
            seen.add(package)
            package = found = origin[package][name]
        return found if found in modules else None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                b = base(module, path, node)
                targets = [f"{b}.{a.name}" if f"{b}.{a.name}" in modules else b for a in node.names]
                targets += [defined_in(b, a.name) or b for a in node.names if f"{b}.{a.name}" not in modules]
            graph[module] |= {t for t in targets if t in modules and t != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules():
    graph = _import_graph()
    assert "cryodet_dask.pipeline.rundir" in graph["cryodet_dask.pipeline.detect"]  # the graph sees imports,
    assert "cryodet_dask.pipeline.rundir" in graph["cryodet_dask.cli.detect"]  # and names through packages
    circles = _circles(graph)
    described = ["; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c))) for c in circles]
    assert not circles, "import circles:\n" + "\n".join(described)


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
