"""Optimizers and schedules in LightningCLI's form: parameter groups, the warmup/decay shapes, sizing from the run."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from litlab.errors import LitlabError
from litlab.optim import WarmupDecay, configure_optimizers


def rates(scheduler, steps: int) -> list[float]:
    optimizer, seen = scheduler.optimizer, []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_warmup_then_decay_to_zero(decay):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1.0)
    seen = rates(WarmupDecay(optimizer, decay, warmup_fraction=0.1, total_steps=100), 100)
    assert seen[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # linear warmup over 10 steps
    assert seen[10] == 1.0 and all(a >= b for a, b in zip(seen[10:], seen[11:])) and seen[-1] < 0.02
    assert seen[55] == pytest.approx(0.5)  # halfway through the decay, both shapes


def test_schedules_are_sized_from_the_run_and_vectors_skip_weight_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    adamw = partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1)
    for scheduler in (WarmupDecay, partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01)):
        setup = configure_optimizers(model, adamw, scheduler, total_steps=40, vector_lr_scale=4.0)
        assert setup["lr_scheduler"]["scheduler"].total_steps == 40 and setup["lr_scheduler"]["interval"] == "step"
    setup = configure_optimizers(model, adamw, None, total_steps=40, vector_lr_scale=4.0)
    assert "lr_scheduler" not in setup  # no schedule: a constant rate
    matrices, vectors = setup["optimizer"].param_groups
    assert [p.ndim for p in matrices["params"]] == [2] and {p.ndim for p in vectors["params"]} == {1}
    assert (matrices["weight_decay"], vectors["weight_decay"]) == (0.1, 0.0)
    assert (matrices["lr"], vectors["lr"]) == (0.01, 0.04)


def test_a_frozen_backbone_needs_a_schedule_that_can_hold_it():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=10)
    with pytest.raises(LitlabError, match="freeze_backbone_epochs"):
        configure_optimizers(model, torch.optim.SGD, step_lr, 100, frozen=model[0], frozen_steps=10)
