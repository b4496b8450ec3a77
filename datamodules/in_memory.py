"""Small datasets held whole as tensors, optionally on the training device.

A batch is gathered with one index operation per column (`TensorColumns.__getitems__`, which the DataLoader calls with
the batch's indices), never item by item and never collated (`data_module.DataModule.loader`).
"""

from __future__ import annotations

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.data_module import DataModule, index_tensor

Columns = dict[str, Tensor | list]  # a list column holds what a model shows but never computes on (file names)


def gather(column: Tensor | list, index: Tensor) -> Tensor | list:
    """The rows `index` (B,) of a tensor or a list column."""
    return column[index] if isinstance(column, Tensor) else [column[i] for i in index.tolist()]


SPLITS_BY_STAGE = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}


class TensorColumns(Dataset):
    """Equal-length tensors (or lists) addressed by name; a batch is `{name: column[indices]}`."""

    def __init__(self, columns: Columns) -> None:
        lengths = {len(column) for column in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns differ in length: { {k: len(v) for k, v in columns.items()} }")
        self.columns = columns
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int | slice) -> Columns:
        return {name: column[index] for name, column in self.columns.items()}

    def __getitems__(self, indices: list[int]) -> Columns:
        device = next(c for c in self.columns.values() if isinstance(c, Tensor)).device
        on_host = index_tensor(indices)  # (B,)
        index = on_host
        if device.type == "cuda":  # a copy from pinned memory does not wait for the GPU to catch up
            index = on_host.pin_memory().to(device, non_blocking=True)
        # tensors by the (device) index, list columns by the host copy: no sync for either
        return {name: gather(c, index if isinstance(c, Tensor) else on_host) for name, c in self.columns.items()}


class InMemoryDataModule(DataModule):
    """Base for datasets that fit in memory: subclasses build each split as a dict of tensors in `make_split`.

    Args:
        batch_size, eval_batch_size, num_workers: see `DataModule`; 0 workers is right for these datasets (a batch is
            one index operation per column), and workers need the data on the host.
        data_on_device: hold the tensors on the training device (no host-to-device copy per batch);
            `None` means yes on a GPU, no on the CPU.
        full_batch_steps: when `batch_size` covers the whole training set (full-batch gradient descent, single
            process), optimizer steps per epoch; each is over the whole set, without any indexing.
    """

    def __init__(
        self,
        batch_size: PositiveInt,
        eval_batch_size: PositiveInt | None = None,
        data_on_device: bool | None = None,
        num_workers: NonNegativeInt = 0,
        full_batch_steps: PositiveInt = 1,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.data_on_device = data_on_device
        self.full_batch_steps = full_batch_steps
        self.splits: dict[str, Columns] = {}

    def make_split(self, split: str) -> Columns:
        """Build one split ("train", "val", "test" or "predict") as CPU tensors of equal length."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on_device = self.data_on_device
        if on_device is None:
            on_device = root.type == "cuda" and self.num_workers == 0
        return root if on_device else torch.device("cpu")

    def setup(self, stage: str) -> None:
        for split in SPLITS_BY_STAGE[stage]:
            if split not in self.splits or split == "predict":
                columns = self.make_split(split).items()
                self.splits[split] = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in columns}

    def split_loader(self, split: str) -> DataLoader:
        dataset = TensorColumns(self.splits[split])
        train = split == "train"
        on_host = all(c.device.type == "cpu" for c in dataset.columns.values() if isinstance(c, Tensor))
        # (Lightning's overfit_batches swaps in a sequential sampler, which would take this loader's slices apart)
        single = self.trainer is None or (self.trainer.world_size == 1 and not self.trainer.overfit_batches)
        if train and self.batch_size >= len(dataset) and single:
            # full-batch gradient descent: every step is the whole set, whose order does not matter, so no indexing
            return self.loader(dataset, True, on_host, sampler=[slice(None)] * self.full_batch_steps, batch_size=None)
        return self.loader(dataset, train, on_host)

    def train_dataloader(self) -> DataLoader:
        return self.split_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.split_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.split_loader("predict")
