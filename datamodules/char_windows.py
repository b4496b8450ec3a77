"""Next-character windows of a text split held as one id tensor: random training windows (`JitteredWindows`), windows
that tile an evaluation split (`tiled_windows`), or parallel streams read batch after batch (`TextStreams`, in order
through `StreamSampler`), so that a recurrent model carries its state across batches."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from datamodules.data_module import index_tensor
from litlab.errors import LitlabError


def contiguous_splits(ids: Tensor, train_fraction: float) -> dict[str, Tensor]:
    """First `train_fraction` for train, the rest halved into val and test (in that order)."""
    if not 0 < train_fraction < 1:
        raise LitlabError(f"--data.train_fraction={train_fraction}: must be between 0 and 1")
    n = len(ids)
    train_end = int(n * train_fraction)
    val_end = train_end + (n - train_end) // 2
    return {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}


class JitteredWindows(Dataset):
    """Training windows: item i is `context_len + 1` characters starting at a random point of the i-th stretch of that
    length, drawn afresh at every access (torch's RNG, so seeded runs repeat). Any sampler works, and under DDP each
    rank reads its own stretches."""

    def __init__(self, ids: Tensor, context_len: int, jitter: bool = True) -> None:
        self.ids, self.width, self.jitter = ids, context_len + 1, jitter
        self.count = (len(ids) - self.width) // self.width
        if self.count < 1:
            raise LitlabError(f"a split of {len(ids)} characters holds no two windows of {self.width}")

    def __len__(self) -> int:
        return self.count

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        stretch = index_tensor(indices) * self.width  # (B,)
        starts = stretch + torch.randint(0, self.width, (len(indices),)) if self.jitter else stretch
        windows = self.ids[starts.unsqueeze(1) + torch.arange(self.width)]  # (B, context_len + 1)
        return {"x": windows[:, :-1], "y": windows[:, 1:]}


class TextStreams(Dataset):
    """A split read as `rows` parallel streams: row r is the r-th of `rows` equal stretches, read `context_len`
    characters at a time (the last window of a row may be shorter). Item `step * rows + r` is row r's window at `step`,
    so batches of `rows` items in order are the rows' consecutive windows; `StreamSampler` gives each rank its share
    of every batch. With `shift`, the rows start up to `context_len - 1` characters later, by a shift the sampler
    draws per epoch and passes in the indices (item `shift * len(self) + i`), so workers need no shared state and
    window boundaries move from epoch to epoch. A batch says whether its rows continue the previous batch's
    (`continues`: step > 0)."""

    def __init__(self, ids: Tensor, context_len: int, rows: int, shift: bool = False) -> None:
        self.ids, self.context_len, self.rows, self.shift = ids, context_len, rows, shift
        self.row_len = (len(ids) - 1 - (context_len - 1 if shift else 0)) // rows  # characters each row predicts
        if self.row_len < 1:
            raise LitlabError(f"a split of {len(ids)} characters cannot be read as {rows} rows: lower the batch size")
        self.steps = -(-self.row_len // context_len)

    def __len__(self) -> int:
        return self.steps * self.rows

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor | bool]:
        given = index_tensor(indices)  # (B,)
        shift, index = given // len(self), given % len(self)
        step = int(index[0]) // self.rows
        if bool((index // self.rows != step).any()) or bool((shift != shift[0]).any()):
            raise LitlabError("stream batches must be read in order: a stream loader cannot be shuffled")
        width = min(self.context_len, self.row_len - step * self.context_len)
        starts = shift + (index % self.rows) * self.row_len + step * self.context_len  # (B,)
        windows = self.ids[starts.unsqueeze(1) + torch.arange(width + 1)]  # (B, width + 1)
        return {"x": windows[:, :-1], "y": windows[:, 1:], "continues": step > 0}


class StreamSampler(DistributedSampler):
    """`TextStreams` in reading order, rank k of `world` taking the rows k, k + world, ... of each step; with the
    dataset's `shift`, one shift per epoch drawn from `seed` and the epoch (the same on every rank). A
    DistributedSampler, so Lightning keeps it instead of injecting its own, which would shuffle the training rows."""

    def __init__(self, streams: TextStreams, world: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(streams, num_replicas=world, rank=rank, shuffle=False, seed=seed)

    def __iter__(self):
        streams = self.dataset
        shift = 0
        if streams.shift:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            shift = int(torch.randint(streams.context_len, (), generator=generator))
        order = torch.arange(self.rank, len(streams), self.num_replicas)  # (steps x rows / world,)
        return iter((order + shift * len(streams)).tolist())


def tiled_windows(ids: Tensor, context_len: int) -> Tensor:
    """(N, context_len + 1) consecutive windows that tile the split (each shares its last character with the next's
    first, so every character after the first is a target exactly once)."""
    count = (len(ids) - 1) // context_len
    if count < 1:
        raise LitlabError(f"a split of {len(ids)} characters holds no window of {context_len + 1}")
    starts = torch.arange(count) * context_len
    return ids[starts.unsqueeze(1) + torch.arange(context_len + 1)]
