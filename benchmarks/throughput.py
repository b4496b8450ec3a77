"""Training throughput of one experiment under several settings, each a short `litlab fit`.

On a GPU this shows what holding the data on the device and bf16-mixed buy:

    python benchmarks/throughput.py --config configs/adder_transformer.yaml --epochs 3 \\
        --variant "fp32, host=--config configs/trainer/gpu.yaml --trainer.precision=32 --data.data_on_device=false" \\
        --variant "bf16, on GPU=--config configs/trainer/gpu.yaml"

Prints, per variant, training samples/s (training batches only, epochs after the first), targets/s where a sample has
several (characters/s of the character models), and seconds per whole epoch. Characters/s of the character models:

    python benchmarks/throughput.py --config configs/char_lstm.yaml --variant "CPU=--data.text_files=[book.txt]"
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litlab.cli import launch  # noqa: E402


class EpochTimer(L.Callback):
    """Per training epoch: seconds of its training batches, samples seen, and seconds including validation."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.samples: list[int] = []
        self.targets: list[int] = []

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # only at epoch boundaries
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.seen, self.train_end = self._now(trainer), 0, None
        self.seen_targets = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += len(next(iter(batch.values())))
        self.seen_targets += batch["y"].numel() if "y" in batch else 0  # e.g. characters of a language model

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.training and self.train_end is None:
            self.train_end = self._now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        end = self._now(trainer)
        self.train_seconds.append((self.train_end or end) - self.start)
        self.epoch_seconds.append(end - self.start)
        self.samples.append(self.seen)
        self.targets.append(self.seen_targets)


def fit_with(callback: str, config: str, epochs: int, extra: list[str]) -> L.Callback:
    """`litlab fit` with one more callback (`module.Class`, importable from benchmarks/); returns that callback."""
    epochs_and_callback = [f"--trainer.max_epochs={epochs}", f"--trainer.callbacks+={callback}"]
    cli = launch("fit", ["--config", config, *epochs_and_callback, *extra])
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == callback.rsplit(".", 1)[-1])


def in_scratch_dir() -> None:
    """Run from a scratch directory (runs/, wandb/ land there), with config paths still relative to the repo."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("WANDB_SILENT", "true")
    sys.path.insert(0, str(Path(__file__).parent))
    os.chdir(tempfile.mkdtemp(prefix="litlab-bench-"))


def measure(config: str, epochs: int, variants: list[tuple[str, list[str]]]) -> None:
    """Print, per (name, extra litlab args) variant, its training samples/s and seconds per epoch."""
    in_scratch_dir()
    for name, extra in variants:
        quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
        timer = fit_with("throughput.EpochTimer", config, epochs, [*quiet, *extra])
        rate = statistics.median(s / t for s, t in zip(timer.samples[1:], timer.train_seconds[1:]))
        targets = statistics.median(s / t for s, t in zip(timer.targets[1:], timer.train_seconds[1:]))
        epoch = statistics.median(timer.epoch_seconds[1:])
        per_target = f" ({targets:,.0f} targets/s: characters for the language models)" if targets > rate else ""
        print(
            f"{name}: {rate:,.0f} training samples/s{per_target}, {epoch:.2f} s per epoch with validation", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/adder_transformer.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variant", action="append", required=True, help='"name=litlab args"')
    args = parser.parse_args()
    config = str((Path.cwd() / args.config).resolve())
    variants = [v.split("=", 1) for v in args.variant]
    variants = [
        (name, [a.replace("configs/", f"{ROOT}/configs/", 1) for a in shlex.split(rest)]) for name, rest in variants
    ]
    measure(config, args.epochs, variants)


if __name__ == "__main__":
    main()
