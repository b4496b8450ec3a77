"""Noisy samples of a polynomial (notebook 15.2): by default ten points of y = (x + 1)² on [-2, 0), as the notebook drew
them (x = -2, -1.8, ..., -0.2), with N(0, 0.05²) noise (its 15.2.2).

Validation and test points are drawn uniformly over a wider range ([-3, 1) by default, the notebook's validation
range), with the same noise, so a model that knew the function exactly would score the noise variance: each batch
carries the noise-free value (`truth`, for the noise floor) and whether the point lies inside the sampled range
(`inside`), so a model can report over-fitting inside the range (fitting the noise) apart from extrapolation beyond
it. Each split is drawn from its own seed and held whole as tensors (on the GPU when training there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor

from datamodules.in_memory import Columns, InMemoryDataModule
from litlab.errors import LitlabError


def polynomial(coefficients: Sequence[float], x: Tensor) -> Tensor:
    """sum_k coefficients[k] * x**k (constant first), for x of any shape."""
    powers = torch.stack([x**k for k in range(len(coefficients))], dim=-1)  # (..., K)
    return powers @ torch.tensor(coefficients, dtype=x.dtype, device=x.device)


class CurveData(InMemoryDataModule):
    """Samples of a polynomial with Gaussian noise; the training x on an even grid, as the notebook placed them.

    Args:
        coefficients: the true function's coefficients, constant first: [1, 2, 1] is (x + 1)² = 1 + 2x + x².
        train_size: training samples (the notebook: 10); more samples is one of the cures.
        x_range: the sampled range [low, high): training x = low + i (high - low) / train_size.
        noise: standard deviation of the noise added to every target (0: the notebook's 15.2.1 and 15.2.3).
        eval_range: where validation and test points are drawn (uniformly), inside and beyond `x_range`.
        val_size, test_size: validation and test points.
        seed: the noise of train uses `seed`, val `seed + 1`, test `seed + 2`.
        predict_x: points to evaluate with `litlab predict`, e.g. '[-3, -1, 1]'.
        full_batch_steps: full-batch steps per epoch (the batch is the whole training set).
    """

    def __init__(
        self,
        coefficients: Sequence[float] = (1.0, 2.0, 1.0),
        train_size: PositiveInt = 10,
        x_range: tuple[float, float] = (-2.0, 0.0),
        noise: NonNegativeFloat = 0.05,
        eval_range: tuple[float, float] = (-3.0, 1.0),
        val_size: PositiveInt = 1000,
        test_size: PositiveInt = 1000,
        seed: int = 0,
        predict_x: tuple[float, ...] | None = None,
        batch_size: PositiveInt = 1_000_000,
        eval_batch_size: PositiveInt | None = 1_000_000,
        data_on_device: bool | None = None,
        num_workers: NonNegativeInt = 0,
        full_batch_steps: PositiveInt = 1000,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, data_on_device, num_workers, full_batch_steps)
        for name, (low, high) in {"x_range": x_range, "eval_range": eval_range}.items():
            if not low < high:
                raise LitlabError(f"--data.{name} must be [low, high) with low < high, got {list((low, high))}")
        if not coefficients:
            raise LitlabError("--data.coefficients needs at least one coefficient (the constant)")
        self.coefficients = [float(c) for c in coefficients]
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.x_range, self.eval_range = tuple(x_range), tuple(eval_range)
        self.noise, self.seed, self.predict_x = noise, seed, predict_x

    @property
    def curve_plot(self) -> dict:
        """What a figure of a fit shows: the training `samples` (x, y), the `truth` (x, y) on a grid over the sampled
        and the evaluated range, and the `sampled_range`."""
        train = self.splits.get("train") or self.make_split("train")
        low, high = min(self.eval_range[0], self.x_range[0]), max(self.eval_range[1], self.x_range[1])
        grid = torch.linspace(low, high, 400)
        return {
            "samples": (train["x"], train["y"]),
            "truth": (grid, polynomial(self.coefficients, grid)),
            "sampled_range": self.x_range,
        }

    def make_split(self, split: str) -> Columns:
        if split == "predict":
            if not self.predict_x:
                raise LitlabError("nothing to predict: pass --data.predict_x '[-3, -1, 1]'")
            x = torch.tensor(self.predict_x, dtype=torch.float32)
            return {"x": x, "truth": polynomial(self.coefficients, x)}
        offset = {"train": 0, "val": 1, "test": 2}[split]
        generator = torch.Generator().manual_seed(self.seed + offset)
        n, (low, high) = self.sizes[split], self.x_range
        if split == "train":  # the notebook's grid: -2 + i * (2 / n)
            x = low + torch.arange(n, dtype=torch.float32) * ((high - low) / n)
        else:
            x = torch.empty(n).uniform_(*self.eval_range, generator=generator)
        truth = polynomial(self.coefficients, x)  # (N,)
        y = truth + self.noise * torch.randn(n, generator=generator)
        return {"x": x, "y": y, "truth": truth, "inside": (x >= low) & (x < high)}
