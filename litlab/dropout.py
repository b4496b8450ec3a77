"""Dropout whose masks are cheap to draw on a CPU (`--model.fast_dropout=true`).

`torch.nn.Dropout` on a CPU draws its mask with `bernoulli_`, one random number per element on one thread: about
9 ns an element, 28 % of `imdb_transformer_scratch`'s training step (docs/results.md). `FastDropout` takes the same
keep-or-drop decisions from 16-bit slices of 64-bit random integers, four elements per draw of torch's generator, and
compares each slice with the drop rate rounded to 1/65536: the same distribution, a different random stream. On other
devices, in evaluation and at p = 0 or 1 it is `nn.Dropout` itself. It holds no weights: checkpoints are the same
with or without it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_SLICES = 4  # 16-bit slices of one int64


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.bool) -> Tensor:
    """A tensor of `shape` and `dtype`: 1 (True) with probability 1 - p (p rounded to a multiple of 1/65536), else 0,
    on the CPU, from torch's default generator (`seed_everything` seeds it). The comparison writes the `dtype` itself:
    a bool mask converted afterwards costs a pass and an allocation more."""
    count = shape.numel()
    words = torch.randint(-(2**63), 2**63 - 1, (-(-count // _SLICES),), dtype=torch.int64)
    slices = words.view(torch.int16)[:count].view(shape)  # uniform over the 65536 int16 values
    threshold = round(p * 65536) - 32768  # the values below it, a share p of them, are dropped
    return torch.ge(slices, threshold, out=torch.empty(shape, dtype=dtype))


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the mask drawn by `keep_mask` on the CPU while training."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p in (0, 1) or x.device.type != "cpu" or x.numel() == 0:
            return super().forward(x)
        return x * keep_mask(x.shape, self.p, x.dtype).mul_(1 / (1 - self.p))


def use_fast_dropout(module: nn.Module) -> int:
    """Every `nn.Dropout` inside `module` (Transformer layers' included) replaced in place by a `FastDropout` of the
    same rate; the number replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                replaced += 1
    return replaced
