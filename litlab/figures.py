"""Figures every run keeps in its own folder, with or without W&B: `<run>/figures/` (see `runs`).

Experiments report through `Experiment.report_table`, `report_images`, `report_confusion` and `report_lines`; each
writes a file into the run's `figures/` folder on rank 0 (`figures/<command>-<checkpoint>/` for `validate` and
`test`) and, when a W&B logger is active, sends the same figure to W&B:

- tables (generated text, corrected sentences, confident errors): `<key>.txt`, one block per epoch;
- image grids with captions (validation samples, detected boxes drawn on the images): `<key>.png`, the latest epoch;
- the test confusion matrix: `<key>.png`;
- y(x) lines over sample points (a fitted curve, the true one): `<key>.png`;
- learning curves of every scalar logged per epoch (`LearningCurves`, added to every fit): `learning_curves.png`.

PNGs need matplotlib (`pip install 'litlab[plots]'`); without it the text tables are still written and one line says
the PNGs were skipped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from litlab.survival import atomic_file
from litlab.tracking import wandb_run

_warned = False


def pyplot():
    """matplotlib's pyplot on the file-only backend, or None (said once) when matplotlib is not installed."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            rank_zero_info("figures: matplotlib is not installed, PNGs are skipped (pip install 'litlab[plots]')")
            _warned = True
        return None
    return plt


def figure_path(trainer: L.Trainer, key: str, suffix: str) -> Path:
    """`<run>/figures/<key with / as _><suffix>` for a fit; for `validate` or `test`, in a folder named for the
    command and checkpoint, `figures/test-best/`, so that neither overwrites the fit's figures or another's. Its
    folder is created (rank 0's view: call it only on rank 0)."""
    folder = Path(trainer.default_root_dir) / "figures"  # rank 0's is the run folder
    command = trainer.state.fn.value if trainer.state.fn is not None else "fit"
    if command in ("validate", "test"):
        folder = folder / f"{command}-{Path(trainer.ckpt_path).stem if trainer.ckpt_path else 'weights'}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key.replace('/', '_')}{suffix}"


def write_table(path: Path, title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Append one block to a text table: a title line, then `column: value` lines per row."""
    with path.open("a", encoding="utf-8") as file:
        file.write(f"== {title}\n")
        for row in rows:
            file.write("\n".join(f"{c}: {v}" for c, v in zip(columns, row)) + "\n\n")


def saved(plt, fig, path: Path, dpi: int) -> bool:
    """The figure laid out, written as a PNG and closed; True (what the `save_*` functions return)."""
    fig.tight_layout()
    with atomic_file(path) as file:  # a kill mid-write leaves the previous figure
        fig.savefig(file, dpi=dpi, format="png")
    plt.close(fig)
    return True


def style(ax, title: str, xlabel: str) -> None:
    """A panel's title, x label, legend and light grid, alike in every figure."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def save_grid(path: Path, images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4) -> bool:
    """Images (H, W[, 3] uint8) in a grid with a caption above each, as a PNG; False without matplotlib."""
    plt = pyplot()
    if plt is None or not images:
        return False
    rows = math.ceil(len(images) / columns)
    cols = min(columns, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(caption, fontsize=8)
    return saved(plt, fig, path, dpi=80)


def save_confusion(path: Path, matrix: torch.Tensor, class_names: Sequence[str]) -> bool:
    """A (true, predicted) count matrix as a heat map with the counts written in, as a PNG."""
    plt = pyplot()
    if plt is None:
        return False
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    counts = matrix.cpu().numpy()
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    high = counts.max() / 2 if counts.size else 0
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if count > high else "black")
    return saved(plt, fig, path, dpi=90)


def save_lines(
    path: Path,
    lines: dict[str, tuple[np.ndarray, np.ndarray]],
    points: tuple[np.ndarray, np.ndarray],
    shade: tuple[float, float],
    title: str,
) -> bool:
    """Named y(x) lines over sample points, the span `shade` shaded (e.g. the sampled range), as a PNG; the y axis is
    fitted to the points and the first line, so a curve that runs away beyond the span leaves the frame."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.axvspan(*shade, color="0.92", label="sampled range")
    for name, (xs, ys) in lines.items():
        ax.plot(xs, ys, label=name)
    ax.scatter(*points, s=14, color="black", zorder=3, label="samples")
    framed = np.concatenate([points[1], next(iter(lines.values()))[1]])
    low, high = framed.min(), framed.max()
    ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
    style(ax, title, "x")
    ax.set_ylabel("y")
    return saved(plt, fig, path, dpi=90)


def save_curves(path: Path, history: dict[str, list[tuple[int, float]]]) -> bool:
    """One panel per metric family (loss, then each other metric name), train/val/test lines per epoch, as a PNG."""
    plt = pyplot()
    if plt is None or not history:
        return False
    panels: dict[str, list[str]] = defaultdict(list)
    for key in sorted(history):
        panels[key.split("/", 1)[-1]].append(key)
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (metric, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            epochs, values = zip(*history[key])
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=key.split("/")[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        style(ax, metric, "epoch")
    return saved(plt, fig, path, dpi=80)


class LearningCurves(Callback):
    """Keeps every scalar logged per epoch (`trainer.callback_metrics`, on the host once per epoch) and draws them
    into `figures/learning_curves.png` when fit ends; `train/loss` is its epoch mean. The curves travel in checkpoints,
    so a resumed fit's figure starts at the first epoch."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._train_loss: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # kept on the device: no sync per step
            self._train_loss.append(loss.detach())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._train_loss:
            mean = torch.stack(self._train_loss).float().mean() * trainer.accumulate_grad_batches  # Lightning divides
            self._record(trainer, {"train/loss": mean})
            self._train_loss = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self._record(trainer, {k: v for k, v in metrics.items() if k.startswith("val/") and v.numel() == 1})

    def _record(self, trainer, metrics: dict) -> None:
        if trainer.is_global_zero:
            for key, value in metrics.items():
                self.history[key].append((trainer.current_epoch, float(value)))

    def state_dict(self) -> dict:
        """The curves so far, in checkpoints: a resumed fit draws them from its first epoch (plain lists of numbers:
        checkpoints stay loadable with `weights_only=True`)."""
        return {"history": {key: [list(point) for point in points] for key, points in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.history = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state.get("history", {}).items()})

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.history:
            path = figure_path(trainer, "learning_curves", ".png")
            if save_curves(path, self.history) and (run := wandb_run(trainer)) is not None:
                import wandb

                run.log({"figures/learning_curves": wandb.Image(str(path))})
