"""What every litlab LightningModule shares, so the launcher and the tests can treat all experiments alike."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import lightning as L
from torch import Tensor

from litlab.errors import LitlabError
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

    The contract with the data. An experiment reads its DataModule only through `from_data(name)`: a public attribute
    the DataModule documents (`classes`, `vocab`, `vocab_size`, `pad_id`, `tokenizer`, `prompts`), never its private
    state; what evaluation and predict need per example (texts, file names, image sizes) travels in the batch.
    Constructor arguments that the data decides (a class count, a vocabulary size) are listed in `data_arguments`
    and default to None; the layers they size are created in `build`, which reads them with `data_argument(name)`:
    the configured value or, at the first fit, the DataModule's attribute of the same name. `build` runs once, in
    Lightning's `configure_model` hook (after the data is set up, before weights are trained or restored), or at the
    end of the constructor when the sizes are already known (`sized()`: a checkpoint's). `on_save_checkpoint` records
    what the data decided (and anything else the model learned, see `learned`) in the checkpoint's hyperparameters,
    so a checkpoint rebuilds its model without the data. The hyperparameters are never rewritten after `__init__`.
    """

    monitor: ClassVar[str]
    monitor_mode: ClassVar[Literal["min", "max"]]
    prediction_format: ClassVar[str] = "{input} -> {output}"
    optimizer: OptimizerCallable
    lr_scheduler: LRSchedulerCallable | None = None
    data_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.learned: dict[str, Any] = {}  # constructor arguments decided at the first fit, for the checkpoint
        self._built = False

    def build(self) -> None:
        """Create the layers sized by the data (nothing by default)."""

    def configure_model(self) -> None:
        if not self._built:
            self.build()
            self._built = True

    def sized(self) -> bool:
        """Whether every `data_arguments` value is known without the data (configured, or from a checkpoint)."""
        return all(self.hparams.get(name) is not None for name in self.data_arguments)

    def from_data(self, name: str) -> Any:
        """The DataModule's public attribute `name` (one line when there is no DataModule or it lacks one)."""
        data = self.trainer.datamodule if self._trainer is not None else None
        if data is None or not hasattr(data, name):
            owner = type(data).__name__ if data is not None else "no DataModule"
            raise LitlabError(f"{type(self).__name__} needs the data's `{name}`, which {owner} does not provide")
        return getattr(data, name)

    def data_argument(self, name: str) -> Any:
        """A constructor argument of `data_arguments`: as configured (or recorded by a checkpoint), else the data's."""
        value = self.hparams.get(name)
        if value is None:
            value = self.learned[name] = self.from_data(name)
        return value

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("hyper_parameters", {}).update(self.learned)

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
