"""Positional encodings for sequence models."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoids(length: int, d_model: int, device: torch.device | str | None = None) -> Tensor:
    """(length, d_model) the sin/cos encoding of positions 0..length-1 (sines in the even channels), made on
    `device`."""
    position = torch.arange(length, device=device).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, device=device) * (-math.log(10000.0) / d_model))  # (C/2,)
    table = torch.zeros(length, d_model, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Adds the fixed sin/cos encoding of "Attention Is All You Need" to a batch of embeddings.

    The encoding is defined for any length: `max_len` rows are computed once, a longer input's on the fly (the buffer
    keeps its size, so every DDP rank holds the same buffers)."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.register_buffer("table", sinusoids(max_len, d_model), persistent=False)  # (L, C), from the arguments

    def encoding(self, length: int) -> Tensor:
        """(length, C) the encoding of the first `length` positions."""
        if length <= self.table.size(0):
            return self.table[:length]
        return sinusoids(length, self.table.size(1), self.table.device).to(self.table.dtype)  # no host copy

    def forward(self, x: Tensor) -> Tensor:
        return x + self.encoding(x.size(1))  # (B, T, C)


class LearnedPositions(nn.Module):
    """Adds a trained vector per position (often faster to learn than sinusoids on short, aligned inputs)."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, d_model))  # (L, C), the embeddings' unit scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.size(1)]  # (B, T, C)
