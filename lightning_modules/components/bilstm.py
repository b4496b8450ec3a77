"""A bidirectional LSTM over padded batches whose padding never reaches a state that is used, shared by the review
classifiers and the speech recogniser."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PaddedBiLSTM(nn.Module):
    """(B, T, input_size) with lengths (B,) -> outputs (B, T, 2 * hidden) and the final states (B, 2 * hidden).

    Each direction is its own LSTM over the padded batch: the forward one reads each sequence from its first step, the
    backward one reads it reversed within its length, so in both the padding comes after the last real step. The
    outputs and final states are those of packed sequences, without packing: on a CPU the packed LSTM's backward pass
    spends most of its time zero-filling per-step gradients (about 8x slower per review), and no lengths travel to the
    host. `dropout` acts between layers."""

    def __init__(self, input_size: int, hidden: int, layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden] * (layers - 1)
        self.ahead = nn.ModuleList(nn.LSTM(size, hidden, batch_first=True) for size in sizes)
        self.back = nn.ModuleList(nn.LSTM(size, hidden, batch_first=True) for size in sizes)
        self.between = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        steps = torch.arange(x.size(1), device=x.device)
        real, last = steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1  # (B, T), (B, 1)
        reverse = torch.where(real, last - steps, steps).unsqueeze(-1)  # (B, T, 1): its own inverse

        def flip(t: Tensor) -> Tensor:  # each sequence's real steps in reverse order, padding left in place
            return t.gather(1, reverse.expand(-1, -1, t.size(-1)))

        for depth, (ahead, back) in enumerate(zip(self.ahead, self.back)):
            if depth:
                x = self.between(x)
            forward_out, _ = ahead(x)  # (B, T, H)
            backward_out, _ = back(flip(x))  # (B, T, H), reversed order
            x = torch.cat([forward_out, flip(backward_out)], dim=2)  # (B, T, 2H)
        at_last = last.unsqueeze(-1).expand(-1, -1, forward_out.size(-1))  # (B, 1, H)
        final = torch.cat([forward_out.gather(1, at_last), backward_out.gather(1, at_last)], dim=2)  # (B, 1, 2H)
        return x, final.squeeze(1)
