"""The enclave's measured code, computed from its imports rather than kept by hand.

Every project file the enclave program can execute is measured: the program itself, each
project module it imports (at the top or inside a function, followed transitively), and the
`__init__.py` of every package on the way, since importing a module runs them. Third-party
libraries are not followed: they are part of the runtime the measurement's PCR1 describes.
Standard library only, so the measurement can be recomputed anywhere from a checkout.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ENCLAVE = "jobs.engines.tee.enclave"


def _module_file(root: Path, module: str) -> Path | None:
    """The project file of `module` (a package's `__init__.py`), or None outside the project."""
    path = root.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported(path: Path, module: str) -> set[str]:
    """The modules a file imports anywhere in it, absolute names (and `from x import y`'s y,
    which may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def measured_modules(root: Path, entry: str = ENCLAVE) -> tuple[str, ...]:
    """Every project module that running `entry` can execute, sorted."""
    seen: dict[str, Path] = {}
    pending = [entry]
    while pending:
        module = pending.pop()
        parts = module.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            path = _module_file(root, name)
            if path is None or name in seen:
                continue
            seen[name] = path
            pending.extend(_imported(path, name))
    return tuple(sorted(seen))


def measured_files(root: Path, entry: str = ENCLAVE) -> list[Path]:
    modules = measured_modules(root, entry)
    return [_module_file(root, module) for module in modules]
