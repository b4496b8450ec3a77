"""`--model.fast_dropout`: dropout masks drawn from slices of 64-bit random integers, with `nn.Dropout`'s
distribution and gradients, and checkpoints that do not depend on it."""

from __future__ import annotations

import pytest
import torch
from conftest import debug_fit
from torch import nn

from litlab.dropout import FastDropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_masks_keep_one_minus_p_at_every_slice_of_a_word(p):
    torch.manual_seed(0)
    kept = keep_mask(torch.Size([250_000, 4]), p).float()  # column j: slice j of each 64-bit word
    # 250k draws per column: the binomial's standard deviation is under 0.001
    assert torch.allclose(kept.mean(0), torch.full((4,), 1 - p), atol=0.004), kept.mean(0)
    # slices of one word are independent: two neighbours are both kept (1 - p)^2 of the time
    assert abs((kept[:, 0] * kept[:, 1]).mean().item() - (1 - p) ** 2) < 0.004


def test_masks_follow_the_seed_and_odd_sizes():
    torch.manual_seed(1)
    first = keep_mask(torch.Size([3, 7]), 0.5)
    torch.manual_seed(1)
    assert first.shape == (3, 7) and torch.equal(first, keep_mask(torch.Size([3, 7]), 0.5))
    assert not torch.equal(first, keep_mask(torch.Size([3, 7]), 0.5))  # the generator moved on


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_mask_of_another_dtype_takes_the_same_decisions(dtype):
    torch.manual_seed(2)
    decisions = keep_mask(torch.Size([5, 11]), 0.3)
    torch.manual_seed(2)
    mask = keep_mask(torch.Size([5, 11]), 0.3, dtype)
    assert mask.dtype == dtype and torch.equal(mask, decisions.to(dtype))


def test_fast_dropout_scales_the_kept_values_and_their_gradients():
    torch.manual_seed(0)
    x = torch.randn(200, 300, requires_grad=True)
    dropout = FastDropout(0.25)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)  # the gradient flows through the kept elements only
    dropout.eval()
    assert torch.equal(dropout(x), x)
    assert torch.equal(FastDropout(0.0)(x), x)
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))


def test_replaces_every_dropout_of_a_transformer_layer_keeping_its_weights():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.2, batch_first=True)
    names = list(layer.state_dict())
    assert use_fast_dropout(layer) == 3
    assert [type(m) for m in layer.modules() if isinstance(m, nn.Dropout)] == [FastDropout] * 3
    assert all(m.p == 0.2 for m in layer.modules() if isinstance(m, nn.Dropout))
    assert list(layer.state_dict()) == names


def test_an_experiment_trains_with_it_and_its_checkpoint_loads_without_it():
    experiment = "imdb_transformer_scratch"  # its config sets fast_dropout
    fast = debug_fit(experiment).model
    assert any(isinstance(m, FastDropout) for m in fast.modules())
    assert not any(type(m) is nn.Dropout for m in fast.modules())
    plain = debug_fit(experiment, "--model.fast_dropout=false").model
    assert not any(isinstance(m, FastDropout) for m in plain.modules())
    assert fast.trainer.global_step == plain.trainer.global_step == 1
    assert list(plain.state_dict()) == list(fast.state_dict())  # checkpoints do not depend on it
    plain.load_state_dict(fast.state_dict())
