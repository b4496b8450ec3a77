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


def datamodule_reads(file: Path) -> list[str]:
    """Where a file reads an object's `datamodule` (an experiment reaching into its data)."""
    tree = ast.parse(file.read_text(), filename=str(file))
    return [
        f"{file.name}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "datamodule"
    ]


def test_experiments_read_their_data_only_through_from_data():
    """`Experiment.from_data` (in litlab) is the one place a model reads its DataModule."""
    reads = [read for file in sorted((ROOT / "lightning_modules").rglob("*.py")) for read in datamodule_reads(file)]
    assert not reads, reads


def test_the_check_sees_datamodule_reads(tmp_path):
    file = tmp_path / "model.py"
    file.write_text("def f(self):\n    return self.trainer.datamodule.texts['test']\n")
    assert datamodule_reads(file) == ["model.py:2"]
