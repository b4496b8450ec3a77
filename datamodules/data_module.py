"""The base of every litlab DataModule: one rule for its loaders (batch sizes, loader processes, pinned memory), and
what it learns from its training data (a vocabulary, a tokenizer), kept in its checkpoints.

Loaders are torchdata's `StatefulDataLoader` (`ResumableLoader`: Lightning keeps its place in checkpoints, so a run
stopped mid-epoch resumes at the next batch, in the same order: `EpochShuffle`; see `litlab.survival`) over datasets
whose `__getitems__` returns a whole batch (never collated item by item), with samplers Lightning knows, so it still
injects its `DistributedSampler` under DDP (each rank reads its own shard), turns shuffling off for `overfit_batches`,
and tracks predict indices.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

# What `litlab predict` takes several of (texts, paths) is typed as a tuple of str: jsonargparse checks a list argument
# in quadratic time (it copies the list once per item: minutes for a thousand files), a tuple in linear time, and a
# str ten times faster than a Path.
Strings = tuple[str, ...]


def index_tensor(indices: Sequence[int] | Tensor) -> Tensor:
    """A batch's indices as an int64 tensor: a list goes through an `array` buffer, a sixth of `torch.as_tensor`'s time
    for 1,024 indices on CPU-B (20 against 130 µs)."""
    if isinstance(indices, Tensor):
        return indices.long()
    if not len(indices):
        return torch.empty(0, dtype=torch.long)
    buffer = indices if isinstance(indices, array) and indices.typecode == "q" else array("q", indices)
    return torch.frombuffer(buffer, dtype=torch.int64)


def keep_batch(batch: Any) -> Any:
    """The collate function of datasets that already return a whole batch."""
    return batch


class EpochShuffle(RandomSampler):
    """A random order of the dataset drawn from the run's seed and the epoch's number (Lightning calls `set_epoch` at
    each epoch's start), as `DistributedSampler` draws each rank's: the same epoch has the same order in a resumed run
    as in an uninterrupted one, and building it draws nothing from the global random state. A `RandomSampler`, so
    Lightning still swaps in its `DistributedSampler` under DDP and a sequential one for `overfit_batches`."""

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableLoader(StatefulDataLoader):
    """torchdata's `StatefulDataLoader`, which Lightning keeps the place of in checkpoints: a run stopped mid-epoch
    resumes at its next batch. The state of a finished epoch is not loaded: the next epoch starts afresh (its order
    comes from its number, `EpochShuffle`), where torchdata would go on with an empty one.

    `resume_from` (an epoch and a loader state) is applied when the loader is built: an argument, so the loader that
    Lightning rebuilds around its `DistributedSampler` under DDP resumes too."""

    def __init__(self, *args: Any, resume_from: tuple[int, dict] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if resume_from is not None:
            self.resume(*resume_from)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("_iterator_finished") or state_dict.get("_num_yielded", 0) >= len(self):
            return
        super().load_state_dict(state_dict)

    def resume(self, epoch: int, state_dict: dict[str, Any]) -> None:
        """Go on from a checkpoint's place in `epoch`."""
        for sampler in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
        self.load_state_dict(state_dict)


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
        self.train_loader_state: tuple[int, dict] | None = None  # a mid-epoch checkpoint's epoch and loader state

    def loader(self, dataset: Dataset, train: bool = False, on_host: bool = True, **sampling: Any) -> DataLoader:
        """`dataset`'s DataLoader (`train`: the training loader): shuffled batches of `batch_size` in training,
        `eval_batch_size` otherwise, or the batches of `sampling` (a `batch_sampler`, or a `sampler` with `batch_size`);
        memory pinned when the data is on the host (`on_host`) and the training on a GPU; worker processes kept between
        epochs; resumable mid-epoch."""
        if not sampling:
            shuffle = {"sampler": EpochShuffle(dataset)} if train else {}
            sampling = {"batch_size": self.batch_size if train else self.eval_batch_size, **shuffle}
        resume_from = None
        if train:  # its workers' seeds: not from the global random state, which a resumed run must draw alike
            sampling.setdefault("generator", torch.Generator().manual_seed(torch.initial_seed()))
            resume_from, self.train_loader_state = self.train_loader_state, None
        return ResumableLoader(
            dataset,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=on_host and trains_on_gpu(self.trainer),
            # Lightning loads a checkpoint's loader state only into a training loader it builds after restoring the
            # checkpoint, which a schedule sized by `trainer.estimated_stepping_batches` makes it build before
            # (`litlab.survival.Interruption.on_load_checkpoint` hands the epoch and state over)
            resume_from=resume_from,
            **sampling,
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self.learned)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.learned = dict(state_dict)
