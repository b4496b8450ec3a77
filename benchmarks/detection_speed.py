"""Test-time speed of detectors: images per second of `litlab test` from each checkpoint, on the same images.

R-CNN (`fruit_rcnn_scratch`) runs its network once per proposal, Fast R-CNN (`fruit_fast_rcnn_scratch`) once per
image; both read the same cached proposals, so the time measured is the model's (network, head and NMS), from the first
to the last test batch after one warm-up batch. Metrics come from the same run.

    python benchmarks/detection_speed.py --data_dir data/fruit \\
        --run "fast=runs/fruit_fast_rcnn_scratch/<run>/checkpoints/best.ckpt" \\
        --run "rcnn=runs/fruit_rcnn_scratch/<run>/checkpoints/best.ckpt" \\
        --run "rcnn, anchors=runs/fruit_rcnn_scratch/<run>/checkpoints/best.ckpt --data.proposals=anchors"
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import in_scratch_dir  # noqa: E402

from litlab.cli import launch  # noqa: E402


class TestTimer(L.Callback):
    """Seconds, images and proposals of each test batch; the first is a warm-up, left out when there are others."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, int, int]] = []

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.start = self._now(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        rois = sum(len(p) for p in batch["proposals"])
        self.batches.append((self._now(trainer) - self.start, len(batch["images"]), rois))

    def totals(self) -> tuple[float, int, int]:
        """(seconds, images, proposals) of the timed batches."""
        timed = self.batches[1:] or self.batches
        return tuple(sum(column) for column in zip(*timed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help='"name=<checkpoint> [litlab args]"')
    parser.add_argument("--data_dir", required=True)
    args = parser.parse_args()
    runs = [(name, shlex.split(rest)) for name, rest in (r.split("=", 1) for r in args.run)]
    data_dir = str(Path(args.data_dir).resolve())
    runs = [(name, [str(Path(ckpt).resolve()), *extra]) for name, (ckpt, *extra) in runs]
    in_scratch_dir()
    for name, (ckpt, *extra) in runs:
        timer = TestTimer()
        cli = launch(
            "test",
            ["--ckpt_path", ckpt, f"--data.data_dir={data_dir}", "--trainer.logger=false",
             "--trainer.enable_progress_bar=false", *extra],
            callbacks=[timer],
        )  # fmt: skip
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/map")}
        seconds, images, rois = timer.totals()
        print(
            f"{name}: {images / seconds:.2f} images/s ({rois / images:.0f} proposals per image, {images} images "
            f"timed), test/map_50 {metrics.get('test/map_50', float('nan')):.3f}, "
            f"test/map {metrics.get('test/map', float('nan')):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
