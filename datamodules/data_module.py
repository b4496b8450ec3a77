"""The base of every litlab DataModule: one rule for its loaders (batch sizes, loader processes, pinned memory), and
what it learns from its training data (a vocabulary, a tokenizer), kept in its checkpoints.

Loaders are plain DataLoaders over datasets whose `__getitems__` returns a whole batch (never collated item by item),
with the standard samplers, so Lightning still injects its `DistributedSampler` under DDP (each rank reads its own
shard), turns shuffling off for `overfit_batches`, and tracks predict indices.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset


def keep_batch(batch: Any) -> Any:
    """The collate function of datasets that already return a whole batch."""
    return batch


def trains_on_gpu(trainer: L.Trainer | None) -> bool:
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


class DataModule(L.LightningDataModule):
    """A subclass passes its loader settings on (and saves its arguments as hyperparameters through this constructor):

    Args:
        batch_size: training batch size per device.
        eval_batch_size: validation, test and predict batch size per device (default: `batch_size`).
        num_workers: loader processes (0: batches are gathered in the main process, right for data held in memory).

    What it learns from its training data goes into `learned` (plain strings and lists: checkpoints load with
    `weights_only`), which travels in checkpoints, so test and predict from a checkpoint read it back.
    """

    def __init__(self, batch_size: int, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the arguments of every constructor of the chain
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.learned: dict[str, Any] = {}

    def loader(self, dataset: Dataset, train: bool = False, on_host: bool = True, **sampling: Any) -> DataLoader:
        """`dataset`'s DataLoader: shuffled batches of `batch_size` in training, `eval_batch_size` otherwise, or the
        batches of `sampling` (a `batch_sampler`, or a `sampler` with `batch_size`); memory pinned when the data is on
        the host (`on_host`) and the training on a GPU; worker processes kept between epochs."""
        if not sampling:
            sampling = {"batch_size": self.batch_size if train else self.eval_batch_size, "shuffle": train}
        return DataLoader(
            dataset,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=on_host and trains_on_gpu(self.trainer),
            **sampling,
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self.learned)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.learned = dict(state_dict)
