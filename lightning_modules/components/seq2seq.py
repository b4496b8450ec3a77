"""Encoder-decoder networks over one token vocabulary (the adder's), with one interface:

forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V)    teacher forcing: tgt_in is bos + the target, shifted
generate(src (B, S), steps, bos_id) -> ids (B, steps)     greedy, autoregressive, fed its own outputs
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from lightning_modules.components.positional import LearnedPositions, SinusoidalPositions


class PeekySeq2Seq(nn.Module):
    """Bidirectional LSTM encoder; LSTM decoder that "peeks" at the encoder summary at every step (notebook 15.8.4).

    Unlike the notebook, the encoder reads packed sequences (padding never enters its states), the summary is the
    final state of both directions of the top layer, and each decoder layer starts from its encoder layer's states.
    """

    def __init__(self, vocab_size: int, pad_id: int, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.pad_id, self.num_layers, self.hidden_dim = pad_id, num_layers, hidden_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True, bidirectional=True, dropout=dropout)
        self.bridge_h = nn.Linear(2 * hidden_dim, hidden_dim)  # both directions of a layer -> its decoder layer
        self.bridge_c = nn.Linear(2 * hidden_dim, hidden_dim)
        self.decoder = nn.LSTM(embed_dim + 2 * hidden_dim, hidden_dim, num_layers, batch_first=True, dropout=dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def encode(self, src: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        lengths = (src != self.pad_id).sum(1).cpu()  # pack_padded_sequence wants host lengths: one small copy
        packed = pack_padded_sequence(self.dropout(self.embed(src)), lengths, batch_first=True, enforce_sorted=False)
        _, (h, c) = self.encoder(packed)  # (2L, B, H) each, layer-major, forward then backward
        batch = src.size(0)
        h = h.view(self.num_layers, 2, batch, self.hidden_dim).transpose(1, 2).reshape(self.num_layers, batch, -1)
        c = c.view(self.num_layers, 2, batch, self.hidden_dim).transpose(1, 2).reshape(self.num_layers, batch, -1)
        summary = h[-1]  # (B, 2H): top layer, final forward and backward states
        return summary, (torch.tanh(self.bridge_h(h)), self.bridge_c(c))  # (L, B, H) each

    def decode(self, tgt_in: Tensor, summary: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        steps = tgt_in.size(1)
        x = torch.cat([self.dropout(self.embed(tgt_in)), summary.unsqueeze(1).expand(-1, steps, -1)], dim=-1)
        out, state = self.decoder(x, state)  # (B, T, H)
        return self.out(out), state  # (B, T, V)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        summary, state = self.encode(src)
        return self.decode(tgt_in, summary, state)[0]

    @torch.no_grad()
    def generate(self, src: Tensor, steps: int, bos_id: int) -> Tensor:
        summary, state = self.encode(src)
        token = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
        outputs = []
        for _ in range(steps):  # the decoder carries its state: one step per call
            logits, state = self.decode(token, summary, state)
            token = logits.argmax(-1)  # (B, 1)
            outputs.append(token)
        return torch.cat(outputs, dim=1)


class TransformerSeq2Seq(nn.Module):
    """Pre-norm Transformer encoder-decoder, input/output embeddings tied, learned or sinusoidal positions.

    Training is teacher-forced under a causal mask; `generate` decodes greedily from bos (the notebook trained
    without teacher forcing, at lr 2e-6, and generated without a mask: it never converged).
    """

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        positions: Literal["learned", "sinusoidal"] = "learned",
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.pad_id, self.scale = pad_id, math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)  # x sqrt(d): unit scale, like the positions
        self.positions = (LearnedPositions if positions == "learned" else SinusoidalPositions)(d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        layer = dict(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), num_encoder_layers, nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer), num_decoder_layers, nn.LayerNorm(d_model)
        )
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.embed.weight

    def _embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.positions(self.embed(ids) * self.scale))  # (B, T, C)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        src_pad = src == self.pad_id  # (B, S), True where padding
        return self.encoder(self._embed(src), src_key_padding_mask=src_pad), src_pad  # (B, S, C)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor) -> Tensor:
        steps = tgt_in.size(1)
        causal = torch.ones(steps, steps, dtype=torch.bool, device=tgt_in.device).triu(1)  # True = may not attend
        h = self.decoder(
            self._embed(tgt_in), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=src_pad
        )
        return self.out(h)  # (B, T, V)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, *self.encode(src))

    @torch.no_grad()
    def generate(self, src: Tensor, steps: int, bos_id: int) -> Tensor:
        memory, src_pad = self.encode(src)
        ids = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
        for _ in range(steps):  # re-decodes the prefix each step: answers are a few tokens long
            next_id = self.decode(ids, memory, src_pad)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
        return ids[:, 1:]
