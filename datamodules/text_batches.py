"""Variable-length token sequences held as one flat tensor, batched by length so little compute goes to padding.

`Sequences` stores every sequence back to back (`tokens`) with its `lengths`; a batch is gathered and padded to its own
longest sequence with a few tensor operations (`__getitems__`), never item by item. `BucketBatchSampler` groups
sequences of similar length: it reads its sampler's order (random for training, so each epoch differs), cuts it into
pools of `pool` batches, sorts each pool by length and cuts that into batches. It is a `BatchSampler` over a sampler,
so Lightning swaps in its `DistributedSampler` under DDP and a sequential one for `overfit_batches`.
"""

from __future__ import annotations

from array import array
from itertools import chain

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, Sampler, SequentialSampler

from datamodules.data_module import EpochShuffle, index_tensor
from datamodules.in_memory import gather


class Ragged:
    """Sequences of different lengths stored back to back: `tokens` (all of them) and `lengths` (one per sequence)."""

    def __init__(self, tokens: Tensor, lengths: Tensor) -> None:
        if int(lengths.sum()) != len(tokens):
            raise ValueError("lengths must sum to the number of tokens")
        self.tokens, self.lengths = tokens, lengths
        self.starts = lengths.cumsum(0) - lengths  # (N,)

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> Ragged:
        """Through an `array` buffer, not a Python list of every id: `torch.tensor` of the IMDB training reviews' 5.9M
        ids took twice as long."""
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        return cls(index_tensor(array("q", chain.from_iterable(sequences))), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: Tensor, pad: int, multiple: int = 1) -> tuple[Tensor, Tensor]:
        """(ids (B, T) padded with `pad`, lengths (B,)) of the sequences `index`; T is the longest, rounded up to a
        multiple of `multiple` (tensor-core matrix shapes on GPUs)."""
        lengths = self.lengths[index]
        longest = int(lengths.max())
        steps = torch.arange(-(-longest // multiple) * multiple)  # (T,)
        valid = steps < lengths.unsqueeze(1)  # (B, T)
        positions = (self.starts[index].unsqueeze(1) + steps).clamp(max=max(len(self.tokens) - 1, 0))
        return torch.where(valid, self.tokens[positions], pad), lengths


class Sequences(Dataset):
    """Token sequences with per-sequence columns (e.g. labels); a batch is
    `{"ids": (B, T) padded with pad_id, "lengths": (B,), "index": (B,), **columns}` (see `Ragged.batch`)."""

    def __init__(self, sequences: Ragged, pad_id: int, multiple: int = 8, **columns: Tensor | list) -> None:
        if any(len(c) != len(sequences) for c in columns.values()):
            raise ValueError("every column must have one entry per sequence")
        self.sequences, self.lengths = sequences, sequences.lengths
        self.pad_id, self.multiple, self.columns = pad_id, multiple, columns

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        index = index_tensor(indices)  # (B,)
        ids, lengths = self.sequences.batch(index, self.pad_id, self.multiple)
        return {
            "ids": ids,
            "lengths": lengths,
            "index": index,
            **{k: gather(v, index) for k, v in self.columns.items()},
        }

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class BucketBatchSampler(BatchSampler):
    """Batches of sequences of similar length, drawn in the order of `sampler`.

    Each pool of `pool * batch_size` sampled indices is sorted by length (longest first) and cut into batches, which
    are yielded in the order in which the sampler reached them (the batch holding the pool's earliest-drawn index
    first): random when the sampler is, repeatable when it is sequential. The number of batches is `BatchSampler`'s.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, lengths: Tensor, pool: int = 50):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.pool = lengths, pool

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        for chunk in order.split(self.batch_size * self.pool):
            by_length = self.lengths[chunk].argsort(descending=True, stable=True)  # positions in the chunk
            batches = list(by_length.split(self.batch_size))
            if self.drop_last and len(batches[-1]) < self.batch_size:
                batches.pop()
            for positions in sorted(batches, key=lambda p: int(p.min())):
                yield chunk[positions].tolist()


def padding_fraction(batches: list[list[int]], lengths: Tensor) -> float:
    """Share of a padded batch's cells that are padding, over all batches."""
    cells = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / cells


def length_batches(dataset: Dataset, batch_size: int, train: bool, bucket: bool = True) -> BatchSampler:
    """The batches of a dataset of sequences (its `lengths`): random for training, in order otherwise, of similar
    lengths unless `bucket` is False."""
    sampler = EpochShuffle(dataset) if train else SequentialSampler(dataset)
    if bucket:
        return BucketBatchSampler(sampler, batch_size, drop_last=False, lengths=dataset.lengths)
    return BatchSampler(sampler, batch_size, drop_last=False)
