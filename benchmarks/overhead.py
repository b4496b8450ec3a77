"""What litlab's Trainer setup costs over a plain PyTorch loop: same model, data, batch size and steps.

litlab side: `litlab fit` exactly as a user runs it (default config files: W&B logger, offline here; rich progress bar;
checkpoints; learning-rate monitor). Plain side: the same LightningModule's `training_step`/`validation_step` called
from a hand-written loop over the same in-memory tensors, with the same optimizer, schedule and gradient clipping, and
no logging, progress display or checkpoints. Both run the validation epoch after each training epoch.

    .venv/bin/python benchmarks/overhead.py [--config configs/adder_transformer.yaml] [--epochs 2] [--pairs 3]
        [-- litlab args]

A shared 2-core machine changes speed by 10 % from one minute to the next, more than the overhead being measured. So
the two run in alternating pairs, and each side of a pair is summarised by estimates that short bursts barely move: the
median time per training step (data, forward, backward, optimizer, every hook and log call in between) times the steps
of an epoch, plus the median time an epoch spends outside its steps (validation, checkpointing), over the epochs after
the first. Last line: overhead_ratio=<litlab/plain>, the median over the pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from throughput import fit_with, in_scratch_dir  # noqa: E402

from litlab.cli import prepare  # noqa: E402
from litlab.optim import configure_optimizers  # noqa: E402


class StepClock:
    """Seconds between consecutive step ends, and each epoch's total."""

    def __init__(self) -> None:
        self.steps: list[list[float]] = []
        self.epochs: list[float] = []

    def epoch_start(self) -> None:
        self.start = self.last = time.perf_counter()
        self.steps.append([])

    def step_end(self) -> None:
        now = time.perf_counter()
        self.steps[-1].append(now - self.last)
        self.last = now

    def epoch_end(self) -> None:
        self.epochs.append(time.perf_counter() - self.start)

    def robust_epoch(self) -> float:
        """Median step x steps per epoch + median time outside the steps, over the epochs after the first."""
        steps = [s for epoch in self.steps[1:] for s in epoch]
        outside = [total - sum(epoch) for total, epoch in zip(self.epochs[1:], self.steps[1:])]
        return statistics.median(steps) * len(self.steps[-1]) + statistics.median(outside)


class StepClockCallback(L.Callback):
    def __init__(self) -> None:
        self.clock = StepClock()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.clock.epoch_start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step_end()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.clock.epoch_end()


def litlab_run(config: str, epochs: int, extra: list[str]) -> StepClock:
    return fit_with("overhead.StepClockCallback", config, epochs, extra).clock


def plain_run(config: str, epochs: int) -> StepClock:
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.max_epochs={epochs}"]
    cli = prepare("fit", ["--config", config, *quiet])  # builds the same model and data, no run
    L.seed_everything(42)
    model, data = cli.model, cli.datamodule
    data.setup("fit")
    model.from_data = lambda name: getattr(data, name)  # what a Trainer's fit reads from its DataModule
    model.configure_model()
    train, val = data.splits["train"], data.splits["val"]
    n, batch_size = len(next(iter(train.values()))), data.batch_size
    steps = epochs * -(-n // batch_size)
    # the adder's optimizer and schedule, as its configure_optimizers builds them
    optimization = configure_optimizers(model, model.optimizer, model.lr_scheduler, steps)
    optimizer, schedule = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    clip = cli.config.trainer.gradient_clip_val or float("inf")
    clock = StepClock()
    for _ in range(epochs):
        clock.epoch_start()
        model.train()
        for i, index in enumerate(torch.randperm(n).split(batch_size)):
            loss = model.training_step({k: v[index] for k, v in train.items()}, i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            clock.step_end()
        model.eval()
        with torch.inference_mode():
            for i, index in enumerate(torch.arange(len(next(iter(val.values())))).split(data.eval_batch_size)):
                model.validation_step({k: v[index] for k, v in val.items()}, i)
        clock.epoch_end()
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/adder_transformer.yaml"))
    parser.add_argument("--epochs", type=int, default=2, help="per run; the first is warm-up")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more litlab arguments, after --")
    args = parser.parse_args()
    args.config = str(Path(args.config).resolve())
    in_scratch_dir()

    ratios = []
    for pair in range(args.pairs):
        plain = plain_run(args.config, args.epochs)
        litlab = litlab_run(args.config, args.epochs, args.extra)
        finish_wandb_run()
        for epoch, (p, q) in enumerate(zip(plain.epochs, litlab.epochs)):
            print(f"pair {pair} epoch {epoch}: plain {p:.2f} s, litlab {q:.2f} s")
        for name, clock in (("plain", plain), ("litlab", litlab)):
            step = statistics.median(s for epoch in clock.steps[1:] for s in epoch)
            print(f"pair {pair} {name}: median step {step * 1000:.2f} ms, robust epoch {clock.robust_epoch():.2f} s")
        ratios.append(litlab.robust_epoch() / plain.robust_epoch())
        print(f"pair {pair} ratio {ratios[-1]:.3f}")
    print(f"overhead_ratio={statistics.median(ratios):.3f}")


def finish_wandb_run() -> None:
    """The next in-process run gets a W&B run of its own."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


if __name__ == "__main__":
    main()
