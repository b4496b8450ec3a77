"""Next-character networks (notebook 15.8.2 and 15.9.9): ids (B, T) -> logits (B, T, V) for every position.

Recurrent ones also take and return their state, so generation feeds one character at a time.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
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


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the past: one fused q/k/v projection and
    `scaled_dot_product_attention(is_causal=True)`, which picks the flash / memory-efficient kernels (no mask tensor
    is built). Attention dropout is its own rate: any non-zero rate sends the CPU to the slower math kernel."""

    def __init__(self, d_model: int, heads: int, attention_dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"the width {d_model} must be a multiple of the {heads} heads")
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.heads = heads
        self.attention_dropout = attention_dropout

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, C/h)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, C/h)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GPTBlock(nn.Module):
    """Pre-norm decoder block: x + attention(norm(x)), then x + MLP(norm(x)), dropout on each residual branch."""

    def __init__(self, d_model: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, heads, attention_dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attention(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class CharGPT(nn.Module):
    """A decoder-only Transformer: embeddings + positions (learned or sinusoidal), pre-norm causal blocks, a final
    LayerNorm, and the output layer tied to the embedding."""

    def __init__(
        self, vocab_size: int, d_model: int, heads: int, layers: int, context_len: int, dropout: float,
        positions: Literal["learned", "sinusoidal"] = "learned", attention_dropout: float = 0.0,
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
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(GPTBlock(d_model, heads, dropout, attention_dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.scale = d_model**0.5

    def forward(self, ids: Tensor, state=None) -> tuple[Tensor, None]:
        ids = ids[:, -self.context_len :]  # (B, T)
        x = self.drop(self.positions(self.embed(ids) * self.scale))  # (B, T, C)
        return self.out(self.norm(self.blocks(x))), None  # (B, T, V)
