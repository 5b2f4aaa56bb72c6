"""Which iomtnode modules a source file imports (stdlib ``ast``; relative and lazy imports
count), for the tests that check which way dependencies point."""

from __future__ import annotations

import ast
from pathlib import Path

import iomtnode

PACKAGE = Path(iomtnode.__file__).parent


def module_name(path: Path) -> str:
    """``iomtnode/cli/query.py`` -> ``iomtnode.cli.query``; a package's ``__init__.py`` is
    the package."""
    parts = ["iomtnode", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The iomtnode modules ``path`` imports (absolute names, relative ones resolved)."""
    package = ["iomtnode", *path.relative_to(PACKAGE).with_suffix("").parts][:-1]
    return imported_by(path.read_text(), package)


def imported_by(source: str, here: list[str]) -> set[str]:
    """The iomtnode modules ``source``, a module of package ``here``, imports. For ``from P
    import x`` this is ``P.x`` when ``x`` may be a module (P is iomtnode or one of its
    packages), else ``P``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "iomtnode"}
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module.split(".")[0] != "iomtnode":
                continue
            found.add(module)
            package = PACKAGE.joinpath(*module.split(".")[1:])
            found |= {f"{module}.{a.name}" for a in node.names
                      if (package / f"{a.name}.py").exists() or (package / a.name).is_dir()}
    return found
