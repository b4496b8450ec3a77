"""What experiments there are: `litlab list`, and the experiment classes by short name (`--model=AdderTransformer`).

`litlab list` prints every `configs/*.yaml` with its family (the module of its LightningModule), what it is, its metric
and its measured figure, as the README's experiments table states them (that table is where each is written once); a
config the table lacks is described by the first sentence of its leading comment.

Short class names: LightningCLI (jsonargparse) resolves `--model=XorMLP` or `--data.help XorData` among the
subclasses it has seen imported. The packages that hold experiments register themselves under the
`litlab.experiments` entry point (see pyproject.toml), so the launcher imports them, only when a short name is used,
without naming them.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path

import yaml

CLASS_OPTIONS = ("--model", "--data", "--model.help", "--data.help")


def readme_rows(readme: Path) -> dict[str, dict[str, str]]:
    """The README's experiments table as {config: {column: text}} (backticks dropped)."""
    lines = readme.read_text(encoding="utf-8").splitlines() if readme.is_file() else []
    header = next((i for i, line in enumerate(lines) if line.startswith("| config |")), None)
    if header is None:
        return {}
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    rows = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(columns, cells))
    return rows


def family(class_path: str) -> str:
    """An experiment's family: the module its LightningModule is defined in (`lightning_modules.adder.X` -> adder)."""
    return class_path.rsplit(".", 2)[-2] if class_path.count(".") >= 2 else class_path


def first_sentence(config: Path) -> str:
    comment = []
    for line in config.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    text = " ".join(comment)
    return re.split(r"(?<=[.:])\s", text, maxsplit=1)[0].rstrip(".:") if text else ""


def experiments(config_dir: Path, readme: Path) -> list[dict[str, str]]:
    """One record per experiment config: config, family, what, metric, measured."""
    rows = readme_rows(readme)
    records = []
    for path in sorted(config_dir.glob("*.yaml")):
        model = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model") or {}
        class_path = str(model.get("class_path", "")) if isinstance(model, dict) else ""
        row = rows.get(path.stem, {})
        records.append(
            {
                "config": path.stem,
                "family": family(class_path),
                "what": row.get("what") or first_sentence(path),
                "metric": row.get("metric", ""),
                "measured": row.get("measured", "not measured"),
            }
        )
    return records


def listing(config_dir: Path, readme: Path) -> str:
    """`litlab list`'s text: per experiment its config, family and what it is, then its metric and measured figure."""
    records = experiments(config_dir, readme)
    config, family = (max(len(r[key]) for r in records) for key in ("config", "family"))
    lines = []
    for r in records:
        lines.append(f"{r['config']:<{config}}  {r['family']:<{family}}  {r['what']}")
        lines.append(f"{'':<{config + family + 2}}  {r['metric'] or 'metric'}: {r['measured']}")
    return "\n".join(lines)


def uses_short_class_name(args: list[str]) -> bool:
    """Whether the command line names a model or data class without its module (`--model=XorMLP`)."""
    for i, arg in enumerate(args):
        option, _, value = arg.partition("=")
        if option in CLASS_OPTIONS:
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            if value.isidentifier():
                return True
    return False


def import_experiments() -> None:
    """Import every module of the packages registered under the `litlab.experiments` entry point."""
    for entry in entry_points(group="litlab.experiments"):
        package = entry.load()
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
