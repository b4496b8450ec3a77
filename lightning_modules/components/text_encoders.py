"""Review classifiers over padded token batches `(ids (B, T), lengths (B,))`; padding never changes an output."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from lightning_modules.components.positional import SinusoidalPositions


def classifier_head(width: int, hidden: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM over packed sequences -> both directions' final states -> MLP.

    Packing runs each review to its own last word, so the final states never see padding (the notebook's
    unidirectional LSTM read only `hn[-1]` of the forward direction)."""

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden: int, layers: int, classes: int, dropout: float, pad_id: int = 0
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            embed_dim, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = classifier_head(2 * hidden, hidden, classes, dropout)

    def forward(self, ids: Tensor, lengths: Tensor, host_lengths: Tensor | None = None) -> Tensor:
        # `host_lengths`: the same lengths on the CPU, which packing needs (passing them avoids a device sync)
        x = self.embed(ids)  # (B, T, E)
        lengths = host_lengths if host_lengths is not None else lengths.cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (layers * 2, B, H), in the batch's original order
        final = torch.cat([h[-2], h[-1]], dim=1)  # (B, 2H): last layer, forward and backward
        return self.head(final)  # (B, classes)


class AttentionClassifier(nn.Module):
    """Embedding (+ sinusoidal positions scaled to the embedding's size) -> Transformer encoder layers with a
    key-padding mask -> mean over the real tokens only -> MLP.

    `positions=False` is the notebook's "self-attention" model (15.8.3.6, no word order); `True` its Transformer
    encoder (15.9.8). The notebook averaged padding positions into the review's vector; here they are masked out."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        classes: int,
        dropout: float,
        positions: bool,
        max_len: int = 512,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.positions = SinusoidalPositions(embed_dim, max_len) if positions else None
        # sinusoids are of unit size; pretrained embeddings are far smaller (BERT's ~0.05), so the table is scaled to
        # the embedding's standard deviation (a buffer: set when pretrained vectors are loaded, kept in checkpoints)
        self.register_buffer("position_scale", torch.ones(()))
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(embed_dim, heads, ff_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.head = classifier_head(embed_dim, ff_dim // 2, classes, dropout)

    def scale_positions_to_embedding(self) -> None:
        self.position_scale.fill_(float(self.embed.weight[1:].std()))

    def forward(self, ids: Tensor, lengths: Tensor, host_lengths: Tensor | None = None) -> Tensor:
        x = self.embed(ids)  # (B, T, E)
        if self.positions is not None:
            x = x + self.positions.table[: x.size(1)] * self.position_scale
        padding = torch.arange(ids.size(1), device=ids.device) >= lengths.unsqueeze(1)  # (B, T) True at padding
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, T, E)
        keep = (~padding).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * keep).sum(1) / lengths.unsqueeze(1).to(x.dtype)  # (B, E): mean of the real tokens
        return self.head(pooled)  # (B, classes)


class BagOfNgramsClassifier(nn.Module):
    """fastText (Joulin et al. 2017): the mean of a review's word embeddings and hashed word n-gram embeddings ->
    dropout -> linear.

    The n-grams (2..`ngrams` consecutive words) are hashed from the word ids on the device into `buckets` extra rows of
    one `EmbeddingBag`: there is no n-gram vocabulary to build, store or ship. Padding, and every n-gram that reaches
    into it, maps to the padding row, which the mean leaves out."""

    MODULUS, MULTIPLIER = 2**31 - 1, 1_000_003  # rolling hash; products stay below 2**51, exact in int64

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        classes: int,
        ngrams: int = 2,
        buckets: int = 2**20,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.ngrams, self.buckets, self.pad_id = vocab_size, ngrams, buckets, pad_id
        rows = vocab_size + (buckets if ngrams > 1 else 0)
        self.embed = nn.EmbeddingBag(rows, embed_dim, mode="mean", padding_idx=pad_id)
        nn.init.uniform_(self.embed.weight, -1 / embed_dim, 1 / embed_dim)  # fastText's start
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, classes))

    def ngram_ids(self, ids: Tensor) -> Tensor:
        """(B, T) word ids -> (B, T + (T-1) + ... ) word and n-gram rows of the embedding table."""
        columns, rolling, real = [ids], ids.long(), ids != self.pad_id
        for n in range(2, self.ngrams + 1):
            rolling = (rolling[:, :-1] * self.MULTIPLIER + ids[:, n - 1 :]) % self.MODULUS  # (B, T-n+1)
            real = real[:, :-1] & (ids[:, n - 1 :] != self.pad_id)  # every word of the n-gram is a real one
            columns.append(torch.where(real, self.vocab_size + rolling % self.buckets, self.pad_id))
        return torch.cat(columns, dim=1)

    def forward(self, ids: Tensor, lengths: Tensor, host_lengths: Tensor | None = None) -> Tensor:
        return self.head(self.embed(self.ngram_ids(ids)))  # (B, classes)
