"""The enclave's measured code: the data plane package, computed rather than kept by hand.

Every file of `dataplane/` is measured (the enclave program and the MPC party program are in it),
with each project module they import (at the top or inside a function, followed transitively)
and the `__init__.py` of every package on the way, since importing a module runs them. The
package may import only the kernel modules in KERNEL; anything else is refused, so the enclave
never runs project code its measurement does not describe. Third-party libraries are not
followed: they are part of the runtime the measurement's PCR1 describes. Standard library only,
so the measurement can be recomputed anywhere from a checkout.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "dataplane"
# The kernel modules the data plane may import: pure functions over bytes and JSON.
KERNEL = (
    "cleanroom.attestation.binding",
    "cleanroom.crypto.envelope",
    "cleanroom.crypto.sealing",
    "cleanroom.audit.verifier.canonical",
)


class UnmeasuredImport(Exception):
    """The data plane imports project code outside itself and the kernel modules it may use."""


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


def _package_modules(root: Path, package: str) -> list[str]:
    base = root.joinpath(*package.split("."))
    return sorted(
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in base.rglob("*.py")
    )


def _allowed(module: str) -> bool:
    """A module the data plane may import: its own, a kernel module named in KERNEL, or a
    package whose `__init__.py` importing those runs."""
    return (
        module == PACKAGE
        or module.startswith(f"{PACKAGE}.")
        or any(k == module or k.startswith(f"{module}.") for k in KERNEL)
    )


def measured_modules(root: Path) -> tuple[str, ...]:
    """Every module of the data plane package and every project module it imports, sorted;
    UnmeasuredImport when the package reaches a project module outside what it may use."""
    return tuple(name for name, _ in _measured(root))


def measured_files(root: Path) -> list[Path]:
    """The files of `measured_modules`, in the same order."""
    return [path for _, path in _measured(root)]


@cache
def _measured(root: Path) -> tuple[tuple[str, Path], ...]:
    """Each measured module with its file, sorted by module name."""
    seen: dict[str, Path] = {}
    pending = [(module, PACKAGE) for module in _package_modules(root, PACKAGE)]
    while pending:
        module, importer = pending.pop()
        parts = module.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            path = _module_file(root, name)
            if path is None or name in seen:
                continue
            if not _allowed(name):
                raise UnmeasuredImport(
                    f"{importer} imports {module}, which the data plane may not use: the "
                    "enclave would run code its measurement does not describe"
                )
            seen[name] = path
            pending.extend((imported, name) for imported in _imported(path, name))
    return tuple(sorted(seen.items()))
