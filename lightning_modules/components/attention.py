"""Self-attention without `nn.MultiheadAttention`'s layout copies, for the encoders trained on a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PackedSelfAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` with the same parameters (and checkpoints) whose batch-first self-attention hands
    `scaled_dot_product_attention` the heads as strided views of the packed projection.

    The parent moves a batch-first input to (T, B, E), copies the projection into (3, T, B, E), each head's slice into
    (B, H, T, d) and back, and its backward zero-fills a (3, T, B, E) tensor for each of q, k and v: for
    `imdb_transformer_scratch`'s reviews of 1,024 words, 25 % of a CPU training step went to `copy_` and `fill_`. Any
    other call (cross-attention, attention weights asked for, an attention mask) is the parent's."""

    @classmethod
    def of(cls, attention: nn.MultiheadAttention) -> PackedSelfAttention:
        """This class in place of `attention`, on its weights' memory (built on the meta device: no random draws)."""
        packed = cls(
            attention.embed_dim, attention.num_heads, attention.dropout, batch_first=attention.batch_first,
            bias=attention.in_proj_bias is not None, device="meta",
        )  # fmt: skip
        packed.load_state_dict(attention.state_dict(), assign=True)
        return packed

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        packed = query is key is value and query.dim() == 3 and self.batch_first and self._qkv_same_embed_dim
        if not packed or need_weights or attn_mask is not None or is_causal or self.bias_k is not None:
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        batch, length, width = query.shape
        heads = self.num_heads
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3E)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, d)
        mask = None
        if key_padding_mask is not None:  # (B, T): True at padding, or added to the scores as the parent does
            mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
            mask = ~mask if mask.dtype == torch.bool else mask.to(q.dtype)  # scaled_dot_product_attention: True attends
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, d)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width)), None
