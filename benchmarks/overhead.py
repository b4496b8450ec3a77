"""What litlab's Trainer setup costs over a plain PyTorch loop: same model, data, batch size and steps.

litlab side: `litlab fit` exactly as a user runs it (default config files: W&B logger, offline here; rich progress bar;
checkpoints; learning-rate monitor). Plain side: the same LightningModule's `training_step`/`validation_step` called
from a hand-written loop over the same in-memory tensors, with the same optimizer, schedule and gradient clipping, and
no logging, progress display or checkpoints. Both run the validation epoch after each training epoch.

    .venv/bin/python benchmarks/overhead.py [--config configs/adder_transformer.yaml] [--epochs 4] [-- litlab args]

Prints seconds per epoch for both and, as its last line, overhead_ratio=<litlab/plain> (median of the epochs after
the first, which both spend warming up).
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

from lightning_modules.cli import LitlabCLI  # noqa: E402
from lightning_modules.optim import configure_optimizers  # noqa: E402
from throughput import in_scratch_dir, timed_fit  # noqa: E402


def litlab_epochs(config: str, epochs: int, extra: list[str]) -> list[float]:
    return timed_fit(config, epochs, extra).epoch_seconds


def plain_epochs(config: str, epochs: int) -> list[float]:
    cli = LitlabCLI(args=["--config", config, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                          f"--trainer.max_epochs={epochs}"], run=False)  # builds the same model and data, no run
    L.seed_everything(42)
    model, data = cli.model, cli.datamodule
    data.setup("fit")
    train, val = data.splits["train"], data.splits["val"]
    n, batch_size = len(next(iter(train.values()))), data.batch_size
    steps = epochs * -(-n // batch_size)
    hp = model.hparams  # the adder's optimisation settings, as its configure_optimizers uses them
    optimization = configure_optimizers(model, steps, hp.optimizer, hp.lr, hp.weight_decay,
                                        schedule=hp.schedule, warmup_fraction=hp.warmup_fraction)
    optimizer, schedule = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    clip = cli.config.trainer.gradient_clip_val or float("inf")
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for i, index in enumerate(torch.randperm(n).split(batch_size)):
            loss = model.training_step({k: v[index] for k, v in train.items()}, i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.inference_mode():
            for i, index in enumerate(torch.arange(len(next(iter(val.values())))).split(data.eval_batch_size)):
                model.validation_step({k: v[index] for k, v in val.items()}, i)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/adder_transformer.yaml"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("extra", nargs="*", help="more litlab arguments, after --")
    args = parser.parse_args()
    args.config = str(Path(args.config).resolve())
    in_scratch_dir()

    plain = plain_epochs(args.config, args.epochs)
    litlab = litlab_epochs(args.config, args.epochs, args.extra)
    for epoch, (p, q) in enumerate(zip(plain, litlab)):
        print(f"epoch {epoch}: plain {p:.2f} s, litlab {q:.2f} s")
    ratio = statistics.median(litlab[1:]) / statistics.median(plain[1:])
    print(f"overhead_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
