"""Optimizers and learning-rate schedules shared by the experiments.

Schedules are stepped per optimizer step and sized by `trainer.estimated_stepping_batches`, so they follow
`max_epochs`/`max_steps`, gradient accumulation and the number of devices without any number copied by hand.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

OptimizerName = Literal["adamw", "sgd", "nesterov"]  # nesterov: SGD with Nesterov momentum
ScheduleName = Literal["constant", "cosine", "linear"]


def configure_optimizers(
    module: nn.Module,
    total_steps: int | float,
    optimizer: OptimizerName,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: ScheduleName = "cosine",
    warmup_fraction: float = 0.05,
    vector_lr_scale: float = 1.0,
    frozen: nn.Module | None = None,
    frozen_steps: int = 0,
) -> dict:
    """The dict `LightningModule.configure_optimizers` returns; pass `trainer.estimated_stepping_batches` as
    `total_steps`. Weight decay skips biases, norms and other vectors; their learning rate is `vector_lr_scale` times
    `lr` (airbench trains BatchNorm shifts 64 times faster than the weights).

    `frozen` (e.g. a pretrained backbone) gets learning rate 0 for the first `frozen_steps` optimizer steps, then
    follows the schedule. Its parameters keep `requires_grad`, so DDP, which registers parameters once, keeps
    synchronising them after they thaw."""
    held = {id(p) for p in frozen.parameters()} if frozen is not None and frozen_steps > 0 else set()
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if (p.ndim >= 2) == decays and (id(p) in held) == is_held], "held": is_held,
         "weight_decay": weight_decay if decays else 0.0, "lr": lr if decays else lr * vector_lr_scale}
        for is_held in (False, True) for decays in (True, False)
    ]  # fmt: skip
    groups = [group for group in groups if group["params"]]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=optimizer == "nesterov")
    if schedule == "constant" and not held:
        return {"optimizer": opt}
    total = max(1, int(total_steps))
    warmup = int(warmup_fraction * total)

    def warmup_decay(step: int) -> float:  # linear warmup, then cosine or linear decay to 0
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    def thawing(step: int) -> float:
        return 0.0 if step < frozen_steps else warmup_decay(step)

    factors = [thawing if group["held"] else warmup_decay for group in groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
