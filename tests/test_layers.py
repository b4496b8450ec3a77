"""The packages import one way: `litlab` (the core) imports no experiment; `datamodules` and `lightning_modules` import
`litlab` and never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "litlab": {"datamodules", "lightning_modules"},
    "datamodules": {"lightning_modules"},
    "lightning_modules": {"datamodules"},
}


def imported_packages(file: Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    wrong = {
        f"{file.relative_to(ROOT)} imports {name}"
        for file in sorted((ROOT / package).rglob("*.py"))
        for name in imported_packages(file) & FORBIDDEN[package]
    }
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    file = tmp_path / "late.py"
    file.write_text("def f():\n    from datamodules.imdb import ImdbData\n    import lightning_modules.xor\n")
    assert {"datamodules", "lightning_modules"} <= imported_packages(file)
