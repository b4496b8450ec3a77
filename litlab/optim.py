"""Optimizers and learning-rate schedules, configured the way LightningCLI users know.

Every experiment takes `optimizer` (any `torch.optim` class with its arguments) and `lr_scheduler` (None for a
constant rate, litlab's `WarmupDecay`, or any torch scheduler):

    model:
      init_args:
        optimizer:
          class_path: torch.optim.SGD
          init_args: {lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}
        lr_scheduler:
          class_path: litlab.optim.WarmupDecay
          init_args: {decay: cosine, warmup_fraction: 0.05}

or on the command line `--model.optimizer=SGD --model.optimizer.lr=0.05`. Schedules step once per optimizer step; one
with a `total_steps` argument left empty (`WarmupDecay`, `OneCycleLR`) is sized from
`trainer.estimated_stepping_batches`, so it follows `max_epochs`/`max_steps`, gradient accumulation and the number of
devices without any number copied by hand.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from litlab.errors import LitlabError

__all__ = ["LRSchedulerCallable", "OptimizerCallable", "WarmupDecay", "configure_optimizers"]


class WarmupDecay(torch.optim.lr_scheduler.LambdaLR):
    """Linear warmup over `warmup_fraction` of the steps, then cosine or linear decay to 0 (or a constant rate).

    Parameter groups marked `held` (a pretrained backbone, see `configure_optimizers`) keep rate 0 for the first
    `frozen_steps` steps, then follow the schedule.

    Args:
        decay: the shape after warmup: "cosine", "linear" (both to 0 at the last step) or "constant".
        warmup_fraction: share of the steps spent warming up (ignored by "constant").
        total_steps: the run's optimizer steps; left empty, litlab fills in `trainer.estimated_stepping_batches`.
        frozen_steps: steps during which held groups do not learn; set by the experiment.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        decay: Literal["cosine", "linear", "constant"] = "cosine",
        warmup_fraction: ClosedUnitInterval = 0.05,
        total_steps: int | None = None,
        frozen_steps: NonNegativeInt = 0,
    ) -> None:
        if total_steps is None:
            raise LitlabError("WarmupDecay needs total_steps (litlab sets it from the trainer when left empty)")
        self.total_steps = total = max(1, int(total_steps))
        warmup = int(warmup_fraction * total)

        def warmup_decay(step: int) -> float:
            if decay == "constant":
                return 1.0
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

        def thawing(step: int) -> float:
            return 0.0 if step < frozen_steps else warmup_decay(step)

        super().__init__(
            optimizer, [thawing if group.get("held") else warmup_decay for group in optimizer.param_groups]
        )


def _arguments(factory: Callable) -> dict[str, object]:
    """The arguments a scheduler factory's class takes, with their defaults overridden by the values already bound
    (a class, a `functools.partial` of one, or jsonargparse's partial, which binds every argument of the class)."""
    candidates = [factory, getattr(factory, "func", None), *getattr(factory, "args", ())]
    target = next((c for c in candidates if inspect.isclass(c)), None)
    defaults = {}
    if target is not None:
        defaults = {
            name: None if p.default is p.empty else p.default
            for name, p in inspect.signature(target).parameters.items()
        }
    return {**defaults, **(getattr(factory, "keywords", None) or {})}


SPARSE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adagrad, torch.optim.SparseAdam)  # they take sparse gradients


def check_sparse_gradients(module: nn.Module, opt: torch.optim.Optimizer) -> None:
    """One line at the start, not a traceback at the first step, when embeddings with sparse gradients (`sparse=True`)
    meet an optimizer that cannot take them, or weight decay, which torch does not apply to them."""
    if not any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse for m in module.modules()):
        return
    if not isinstance(opt, SPARSE_OPTIMIZERS):
        names = ", ".join(f"torch.optim.{kind.__name__}" for kind in SPARSE_OPTIMIZERS)
        raise LitlabError(
            f"sparse embedding gradients (sparse_grads) need an optimizer that takes them ({names}), "
            f"not {type(opt).__name__}"
        )
    if any(group.get("weight_decay") for group in opt.param_groups):
        raise LitlabError(
            "sparse embedding gradients (sparse_grads) take no weight decay in torch: "
            "pass --model.optimizer.init_args.weight_decay=0"
        )


def configure_optimizers(
    module: nn.Module,
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
    total_steps: int | float,
    vector_lr_scale: float = 1.0,
    frozen: nn.Module | None = None,
    frozen_steps: int = 0,
    lr_scales: Mapping[int, float] | None = None,
) -> dict:
    """The dict `LightningModule.configure_optimizers` returns; pass `trainer.estimated_stepping_batches` as
    `total_steps`. Weight decay (the optimizer's `weight_decay`) skips biases, norms and other vectors; their learning
    rate is `vector_lr_scale` times the optimizer's (airbench trains BatchNorm shifts 64 times faster than weights).

    `frozen` (e.g. a pretrained backbone) gets learning rate 0 for the first `frozen_steps` optimizer steps, then
    follows the schedule. Its parameters keep `requires_grad`, so DDP, which registers parameters once, keeps
    synchronising them after they thaw. `lr_scales` (`id` of a parameter -> factor) sets some parameters' learning
    rate to a multiple of the optimizer's (LoRA+'s B matrices)."""
    held = {id(p) for p in frozen.parameters()} if frozen is not None and frozen_steps > 0 else set()
    params = [p for p in module.parameters() if p.requires_grad]
    lr_scales = lr_scales or {}
    groups = [
        {"params": [p for p in params if (p.ndim >= 2) == decays and (id(p) in held) == is_held
                    and lr_scales.get(id(p), 1.0) == scale],
         "held": is_held, "vector": not decays, "lr_scale": scale, **({} if decays else {"weight_decay": 0.0})}
        for is_held in (False, True) for decays in (True, False) for scale in sorted({1.0, *lr_scales.values()})
    ]  # fmt: skip
    try:
        opt = optimizer([group for group in groups if group["params"]])
    except (ValueError, TypeError) as err:
        raise LitlabError(f"--model.optimizer: {err}") from None
    check_sparse_gradients(module, opt)
    for group in opt.param_groups:
        group["lr"] *= (vector_lr_scale if group["vector"] else 1.0) * group["lr_scale"]
    if lr_scheduler is None and not held:
        return {"optimizer": opt}
    scheduler = lr_scheduler or WarmupDecay
    given = _arguments(scheduler)
    sizes = {"total_steps": max(1, int(total_steps)), "frozen_steps": frozen_steps}
    extra = {name: value for name, value in sizes.items() if name in given and given[name] in (None, 0)}
    if held and "frozen_steps" not in given:
        raise LitlabError(
            "a frozen backbone (freeze_backbone_epochs) needs --model.lr_scheduler litlab.optim.WarmupDecay"
        )
    if lr_scheduler is None:
        extra["decay"] = "constant"
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler(opt, **extra), "interval": "step"}}
