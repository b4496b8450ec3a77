"""Points of the XOR problem (notebook 15.1): x ~ N(0, I2), label 1 when x1 and x2 have the same sign, else 0.

Each split is drawn from its own seed; the whole set lives in one tensor (on the GPU when training there).
"""

from __future__ import annotations

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt

from datamodules.in_memory import Columns, InMemoryDataModule
from litlab.errors import LitlabError


class XorData(InMemoryDataModule):
    """Gaussian points labelled by whether their two coordinates share a sign.

    Args:
        train_size, val_size, test_size: points per split (the notebook: 100k train, 100k test).
        seed: train uses `seed`, val `seed + 1`, test `seed + 2`.
        predict_points: points to classify with `litlab predict`, e.g. '[[0.5, -1.2], [2, 3]]'.
        full_batch_steps: with `batch_size >= train_size`, full-batch steps per epoch (see `InMemoryDataModule`).
    """

    def __init__(
        self,
        train_size: PositiveInt = 100_000,
        val_size: PositiveInt = 10_000,
        test_size: PositiveInt = 100_000,
        seed: int = 0,
        predict_points: tuple[tuple[float, float], ...] | None = None,
        batch_size: PositiveInt = 1024,
        eval_batch_size: PositiveInt | None = 100_000,
        data_on_device: bool | None = None,
        num_workers: NonNegativeInt = 0,
        full_batch_steps: PositiveInt = 1,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, data_on_device, num_workers, full_batch_steps)
        if min(train_size, val_size, test_size) < 1:
            raise LitlabError(f"split sizes must be positive, got {train_size}/{val_size}/{test_size}")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed
        self.predict_points = predict_points

    def make_split(self, split: str) -> Columns:
        if split == "predict":
            if not self.predict_points:
                raise LitlabError("nothing to predict: pass --data.predict_points '[[0.5, -1.2], [2, 3]]'")
            return {"x": torch.tensor(self.predict_points, dtype=torch.float32)}
        offset = {"train": 0, "val": 1, "test": 2}[split]
        generator = torch.Generator().manual_seed(self.seed + offset)
        x = torch.randn(self.sizes[split], 2, generator=generator)  # (N, 2)
        return {"x": x, "y": (x[:, 0] * x[:, 1] > 0).float()}  # (N,)
