"""`PackedSelfAttention`: `nn.MultiheadAttention`'s results and gradients, its parameters, its checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_modules.components.attention import PackedSelfAttention


def encoders(dropout: float = 0.0) -> tuple[nn.TransformerEncoder, nn.TransformerEncoder]:
    """A pre-norm encoder as the IMDB classifiers build it, and a copy whose attention is packed."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout, batch_first=True, norm_first=True)
    plain = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(32), enable_nested_tensor=False)
    packed = copy.deepcopy(plain)
    for block in packed.layers:
        block.self_attn = PackedSelfAttention.of(block.self_attn)
    return plain, packed


@pytest.mark.parametrize("mode", ["train", "eval", "inference"])
def test_outputs_and_gradients_are_multihead_attentions_under_a_padding_mask(mode):
    plain, packed = encoders()
    plain.train(mode == "train")
    packed.train(mode == "train")
    x = torch.randn(6, 20, 32, requires_grad=mode != "inference")
    padding = torch.arange(20) >= torch.tensor([20, 13, 7, 1, 20, 5]).unsqueeze(1)  # (B, T), True at padding
    real = ~padding
    with torch.inference_mode(mode == "inference"):  # inference: the encoder layer's own fused path
        expected, got = plain(x, src_key_padding_mask=padding), packed(x, src_key_padding_mask=padding)
    assert torch.allclose(got[real], expected[real], atol=1e-6)
    if mode != "inference":
        weights = [x, *plain.parameters()], [x, *packed.parameters()]
        for a, b in zip(*(torch.autograd.grad(out[real].sum(), w) for out, w in zip((expected, got), weights))):
            assert torch.allclose(a, b, atol=1e-5)


def test_it_takes_the_weights_as_they_are_and_draws_no_random_numbers():
    attention = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    state = torch.random.get_rng_state()
    packed = PackedSelfAttention.of(attention)
    assert torch.equal(torch.random.get_rng_state(), state)  # a seeded model's other weights start the same
    assert packed.in_proj_weight.data_ptr() == attention.in_proj_weight.data_ptr()  # the same memory, no copy
    assert torch.equal(packed.out_proj.bias, attention.out_proj.bias)
    assert packed.dropout == 0.1 and packed.state_dict().keys() == attention.state_dict().keys()


def test_calls_it_does_not_pack_are_the_parents():
    attention = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    packed = PackedSelfAttention.of(copy.deepcopy(attention))
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    out, weights = packed(x, x, x)  # attention weights asked for
    assert weights.shape == (2, 5, 5) and torch.allclose(out, attention(x, x, x)[0], atol=1e-6)
    cross = packed(x, memory, memory, need_weights=False)[0]
    assert torch.allclose(cross, attention(x, memory, memory, need_weights=False)[0], atol=1e-6)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    assert torch.allclose(
        packed(x, x, x, attn_mask=causal, need_weights=False)[0],
        attention(x, x, x, attn_mask=causal, need_weights=False)[0],
        atol=1e-6,
    )
