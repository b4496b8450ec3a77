"""Review classifiers over padded token batches `(ids (B, T), lengths (B,))`; padding never changes an output."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_modules.components.attention import PackedSelfAttention
from lightning_modules.components.bilstm import PaddedBiLSTM
from lightning_modules.components.positional import SinusoidalPositions


def real_tokens(ids: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) True at each sequence's own tokens, False at the padding after them."""
    return torch.arange(ids.size(1), device=ids.device) < lengths.unsqueeze(1)


def classifier_head(width: int, hidden: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM (`PaddedBiLSTM`: padding never read) -> both directions' final states (or the
    maximum of each feature over the review's words, `pooling="max"`) -> MLP. The notebook's unidirectional LSTM read
    only `hn[-1]` of the forward direction."""

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden: int, layers: int, classes: int, dropout: float, pad_id: int = 0,
        pooling: Literal["final", "max"] = "final",
    ) -> None:  # fmt: skip
        super().__init__()
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = PaddedBiLSTM(embed_dim, hidden, layers, dropout)
        self.head = classifier_head(2 * hidden, hidden, classes, dropout)
        self.register_load_state_dict_pre_hook(rename_unwrapped_lstm)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        outputs, final = self.lstm(self.embed(ids), lengths)  # (B, T, 2H), (B, 2H)
        if self.pooling == "max":
            real = real_tokens(ids, lengths).unsqueeze(-1)  # (B, T, 1)
            return self.head(outputs.masked_fill(~real, float("-inf")).amax(1))  # (B, classes)
        return self.head(final)  # (B, classes)


def rename_unwrapped_lstm(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints written before the LSTM moved into `PaddedBiLSTM` name its weights `ahead.*` and `back.*`."""
    for key in [k for k in state_dict if k.startswith((f"{prefix}ahead.", f"{prefix}back."))]:
        state_dict[f"{prefix}lstm.{key.removeprefix(prefix)}"] = state_dict.pop(key)


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
        attention_dropout: float = 0.0,
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
        layer.self_attn.dropout = attention_dropout  # its own rate: `dropout` stays on the residual branches
        layer.self_attn = PackedSelfAttention.of(layer.self_attn)  # the same weights, without the layout copies
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.head = classifier_head(embed_dim, ff_dim // 2, classes, dropout)

    def scale_positions_to_embedding(self) -> None:
        self.position_scale.fill_(float(self.embed.weight[1:].std()))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        x = self.embed(ids)  # (B, T, E)
        if self.positions is not None:
            x = x + self.positions.encoding(x.size(1)) * self.position_scale
        padding = ~real_tokens(ids, lengths)  # (B, T)
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, T, E)
        keep = (~padding).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * keep).sum(1) / lengths.unsqueeze(1).to(x.dtype)  # (B, E): mean of the real tokens
        return self.head(pooled)  # (B, classes)


class BagOfNgramsClassifier(nn.Module):
    """fastText (Joulin et al. 2017): the mean of a review's word embeddings and hashed word n-gram embeddings ->
    dropout -> linear.

    The n-grams (2..`ngrams` consecutive words) are hashed from the word ids on the device into `buckets` extra rows of
    one embedding table: there is no n-gram vocabulary to build, store or ship. Padding, and every n-gram that reaches
    into it, maps to the padding row, which the mean leaves out.

    The mean is an `nn.Embedding` lookup summed over the review, not an `nn.EmbeddingBag` with `padding_idx`: on CPU
    that bag takes a slower path (the forward and backward of 128 reviews of 200 words: 2.9 against 4.4 ms, CPU-B)."""

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
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size, self.ngrams, self.buckets, self.pad_id = vocab_size, ngrams, buckets, pad_id
        rows = vocab_size + (buckets if ngrams > 1 else 0)
        self.embed = nn.Embedding(rows, embed_dim, padding_idx=pad_id, sparse=sparse)
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

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        rows = self.ngram_ids(ids)  # (B, L)
        real = (rows != self.pad_id).unsqueeze(-1)  # (B, L, 1): words and n-grams, not padding
        total = (self.embed(rows) * real).sum(1)  # (B, E); the mask keeps padding out of adversarial moves too
        return self.head(total / real.sum(1).clamp(min=1))  # (B, classes): the mean, zeros for an empty review


class RegionCNNClassifier(nn.Module):
    """Johnson & Zhang's seq-CNN (2015): a convolution over the one-hot words of each `region`-word window (a ReLU
    feature map per row of `maps`) -> each map's maximum over the review -> dropout -> linear.

    A convolution over one-hot words is a sum of per-slot embeddings: slot k of the window reads row `k * vocab + id`
    of one `EmbeddingBag` (mode "sum"), so there is no (B, T, vocab) input and no per-slot copy of the words. Windows
    run from the one ending at the first word to the one starting at the last, padding rows (zeros) filling their
    ends; windows that hold no word of the review are left out of the maximum."""

    def __init__(
        self, vocab_size: int, maps: int, classes: int, region: int = 3, dropout: float = 0.5, pad_id: int = 0
    ) -> None:
        super().__init__()
        self.vocab_size, self.region, self.pad_id = vocab_size, region, pad_id
        self.embed = nn.EmbeddingBag(region * vocab_size, maps, mode="sum", padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=0.1)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.bias = nn.Parameter(torch.zeros(maps))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(maps, classes))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        r = self.region
        padded = nn.functional.pad(ids, (r - 1, r - 1), value=self.pad_id)  # (B, T + 2r - 2)
        windows = padded.unfold(1, r, 1)  # (B, T + r - 1, r): window j holds words j - r + 1 .. j
        rows = windows + torch.arange(r, device=ids.device) * self.vocab_size  # slot k's own rows
        rows = torch.where(windows == self.pad_id, self.pad_id, rows)
        maps = self.embed(rows.flatten(0, 1)).unflatten(0, windows.shape[:2]) + self.bias  # (B, T + r - 1, maps)
        holds_words = real_tokens(windows[..., 0], lengths + r - 1).unsqueeze(-1)  # (B, T + r - 1, 1)
        pooled = (maps.relu() * holds_words).amax(1)  # (B, maps): ReLU maps are >= 0, so 0 leaves the max unchanged
        return self.head(pooled)  # (B, classes)
