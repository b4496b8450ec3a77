"""Next-character networks (notebook 15.8.2 and 15.9.9): ids (B, T) -> logits (B, T, V) for every position.

Recurrent ones also take and return their state, so generation feeds one character at a time.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_modules.components.positional import LearnedPositions, SinusoidalPositions


class TanhRNN(nn.Module):
    """The notebook's hand-written RNN: h_t = tanh(W_x x_t + W_h h_{t-1} + b), stacked. A teaching model: the input
    projections of all steps are one matrix product, but the recurrence is a Python loop over time."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * num_layers
        self.inputs = nn.ModuleList(nn.Linear(n_in, hidden_size) for n_in in sizes[:-1])
        self.recurrent = nn.ModuleList(nn.Linear(hidden_size, hidden_size, bias=False) for _ in range(num_layers))
        self.hidden_size = hidden_size

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, t, _ = x.shape  # (B, T, C)
        if state is None:
            state = x.new_zeros(len(self.inputs), b, self.hidden_size)  # (L, B, H)
        finals = []
        for layer, (w_x, w_h) in enumerate(zip(self.inputs, self.recurrent)):
            projected = w_x(x)  # (B, T, H), every step at once
            h, outputs = state[layer], []
            for step in range(t):
                h = torch.tanh(projected[:, step] + w_h(h))
                outputs.append(h)
            x = torch.stack(outputs, dim=1)  # (B, T, H)
            finals.append(h)
        return x, torch.stack(finals)


class RecurrentLM(nn.Module):
    """Embedding -> recurrent layers -> dropout -> linear over the vocabulary."""

    def __init__(
        self, cell: Literal["rnn_scratch", "lstm", "gru"], vocab_size: int, embed_dim: int, hidden: int, layers: int,
        dropout: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        if cell == "rnn_scratch":
            self.rnn = TanhRNN(embed_dim, hidden, layers)
        else:
            kind = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = kind(embed_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, ids: Tensor, state=None) -> tuple[Tensor, object]:
        h, state = self.rnn(self.embed(ids), state)  # (B, T, H)
        return self.out(self.drop(h)), state  # (B, T, V)


class CharGPT(nn.Module):
    """A decoder-only Transformer: embeddings + positions (learned or sinusoidal), pre-norm blocks under a causal
    mask, a final LayerNorm, and the output layer tied to the embedding."""

    def __init__(
        self, vocab_size: int, d_model: int, heads: int, layers: int, context_len: int, dropout: float,
        positions: Literal["learned", "sinusoidal"] = "learned",
    ) -> None:  # fmt: skip
        super().__init__()
        self.context_len = context_len
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        self.positions = (
            LearnedPositions(d_model, context_len)
            if positions == "learned"
            else SinusoidalPositions(d_model, context_len)
        )
        block = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.scale = d_model**0.5

    def forward(self, ids: Tensor, state=None) -> tuple[Tensor, None]:
        ids = ids[:, -self.context_len :]  # (B, T)
        x = self.positions(self.embed(ids) * self.scale)  # (B, T, C)
        mask = nn.Transformer.generate_square_subsequent_mask(ids.size(1), device=ids.device)
        return self.out(self.norm(self.blocks(x, mask=mask, is_causal=True))), None  # (B, T, V)
