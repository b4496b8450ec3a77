"""The packages import one way: `litlab` (the core) imports no experiment; `datamodules` and `lightning_modules` import
`litlab` and never each other. Inside the core no two modules import each other, even through others; no source file
holds more than about 300 lines."""

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


def imported_modules(file: Path) -> set[str]:
    """Every module a file imports, at its top or inside functions (`a.b` and `a.b.c` for `from a.b import c`: c may
    be a module)."""
    modules = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from litlab import figures`
    return modules


def imported_packages(file: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(file)}


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


def core_imports() -> dict[str, set[str]]:
    """Who imports whom inside `litlab/`: module name -> the litlab modules it imports."""
    core = {file.stem: file for file in (ROOT / "litlab").glob("*.py") if file.stem != "__init__"}
    return {
        name: {m.split(".")[1] for m in imported_modules(file) if m.startswith("litlab.")} & set(core)
        for name, file in core.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph: each as the path from a module back to itself (depth-first)."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for imported in sorted(graph.get(node, ())):
            visit(imported, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_no_module_of_the_core_imports_itself_back():
    graph = core_imports()
    assert not cycles(graph), cycles(graph)
    assert "cli" in graph["tune"] and "tune" not in graph["cli"]  # tune is a client of the launcher


def test_the_cycle_check_finds_cycles():
    assert cycles({"cli": {"tune"}, "tune": {"search"}, "search": {"cli"}}) == [["cli", "tune", "search", "cli"]]
    assert cycles({"tune": {"cli"}, "cli": {"runs"}}) == []


@pytest.mark.parametrize("package", ["litlab", "lightning_modules", "datamodules"])
def test_files_hold_about_300_lines_at_most(package):
    long = {
        str(f.relative_to(ROOT)): n
        for f in (ROOT / package).rglob("*.py")
        if (n := len(f.read_text().splitlines())) > 300
    }
    assert not long, long
