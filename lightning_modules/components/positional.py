"""Positional encodings for sequence models."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalPositions(nn.Module):
    """Adds the fixed sin/cos encoding of "Attention Is All You Need" to a batch of embeddings."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (L, 1)
        frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (C/2,)
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
        self.register_buffer("table", table, persistent=False)  # (L, C), rebuilt from the arguments

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.size(1)]  # (B, T, C)


class LearnedPositions(nn.Module):
    """Adds a trained vector per position (often faster to learn than sinusoids on short, aligned inputs)."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, d_model))  # (L, C), the embeddings' unit scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.size(1)]  # (B, T, C)
