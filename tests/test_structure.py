"""The package's structure rules that a reader relies on (issue 16): no private cross-package imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cryodet_dask"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute module names of every ``from ... import`` in ``path`` (relative ones resolved)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    else:
        parts = parts[:-1]  # the module's package
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return found


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
