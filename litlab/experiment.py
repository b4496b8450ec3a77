"""What every litlab LightningModule shares, so the launcher and the tests can treat all experiments alike."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import lightning as L
from torch import Tensor

from litlab.optim import LRSchedulerCallable, OptimizerCallable, configure_optimizers


class Experiment(L.LightningModule):
    """A LightningModule with one step body for training, validation and test.

    Subclasses implement `_shared_step(batch, stage)` (stage is "train", "val" or "test"; it returns the loss and logs
    `{stage}/<metric>` through torchmetrics objects), `predict_step` (a list of records with at least "input" and
    "output"), and declare:

    - `monitor`, `monitor_mode`: the validation metric `best.ckpt` is chosen by, and whether higher ("max") is better;
    - `prediction_format`: the `str.format` template of the line `litlab predict` prints per record.

    Constructors take `optimizer` and `lr_scheduler` (LightningCLI's `OptimizerCallable` / `LRSchedulerCallable`, see
    `litlab.optim`) and keep them as `self.optimizer` and `self.lr_scheduler`.
    """

    monitor: ClassVar[str]
    monitor_mode: ClassVar[Literal["min", "max"]]
    prediction_format: ClassVar[str] = "{input} -> {output}"
    optimizer: OptimizerCallable
    lr_scheduler: LRSchedulerCallable | None = None

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def parameter_groups(self) -> dict[str, Any]:
        """How `optim.configure_optimizers` groups this experiment's parameters: `vector_lr_scale`, `frozen`,
        `frozen_steps` (none by default)."""
        return {}

    def configure_optimizers(self) -> dict:
        steps = self.trainer.estimated_stepping_batches
        return configure_optimizers(self, self.optimizer, self.lr_scheduler, steps, **self.parameter_groups())

    def wandb_run(self):
        """The W&B run on rank 0 when a WandbLogger is active (for tables, images and plots), else None."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [logger for logger in self.loggers if isinstance(logger, WandbLogger)]
        return loggers[0].experiment if loggers and self.trainer.is_global_zero else None

    def log_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        """`train/loss` per step (the logger samples it every `log_every_n_steps`, no host sync in between);
        `val/loss` and `test/loss` as epoch means, reduced across DDP ranks once at the end of the epoch."""
        evaluating = stage != "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=not evaluating,
            on_epoch=evaluating,
            sync_dist=evaluating,
            batch_size=batch_size,
        )
