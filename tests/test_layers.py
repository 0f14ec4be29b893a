"""Imports flow one way (DESIGN.md §2): each package may import only the packages listed
for it. Checked on the source, so a forbidden import fails here before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "relaymq"

# package -> the relaymq packages and modules it may import (besides itself)
ALLOWED = {
    "core": {"errors"},
    "protocol": {"errors", "core"},
    "store": {"errors", "core"},
    "broker": {"errors", "core", "store"},
    "auth": {"errors", "core", "broker", "store", "config"},
    "api": {"errors", "core", "protocol", "broker", "auth", "store", "config"},
    "client": {"errors", "core", "protocol"},
}


def relaymq_imports(path: Path) -> set[str]:
    """The first component after ``relaymq.`` of every import in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "relaymq" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    offenders = {
        str(path.relative_to(SOURCE)): sorted(relaymq_imports(path) - allowed)
        for path in (SOURCE / package).rglob("*.py")
        if relaymq_imports(path) - allowed
    }
    assert offenders == {}
