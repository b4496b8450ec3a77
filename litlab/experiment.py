"""What every litlab LightningModule shares, so the launcher and the tests can treat all experiments alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
from torch import Tensor, nn
from torchmetrics import Metric

from litlab import figures
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
    compile_mode: str | None = None  # `litlab fit --compile=true` (or a torch.compile mode) sets it for the run

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
            if self.compile_mode:
                for module in self.compiled_modules():
                    module.compile(mode=None if self.compile_mode == "default" else self.compile_mode)

    def compiled_modules(self) -> list[nn.Module]:
        """What `--compile` compiles (in place: parameter names and checkpoints stay as they are): by default each
        child module holding parameters, which leaves out the metrics and the loss."""
        containers = (Metric, nn.ModuleDict, nn.ModuleList)
        return [
            child
            for child in self.children()
            if not isinstance(child, containers) and next(child.parameters(), None) is not None
        ]

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

    def onnx_example(self, data_class: type) -> tuple[nn.Module, dict[str, Tensor], list[str]] | None:
        """What `litlab-export` writes to ONNX: the module to trace, its example inputs by name (the batch dimension
        dynamic, and every dimension of integer inputs such as token ids) and its output names; None when the
        experiment has no ONNX export."""
        return None

    def parameter_groups(self) -> dict[str, Any]:
        """How `optim.configure_optimizers` groups this experiment's parameters: `vector_lr_scale`, `frozen`,
        `frozen_steps` (none by default)."""
        return {}

    def configure_optimizers(self) -> dict:
        steps = self.trainer.estimated_stepping_batches
        return configure_optimizers(self, self.optimizer, self.lr_scheduler, steps, **self.parameter_groups())

    def wandb_run(self):
        """The W&B run on rank 0 when a WandbLogger is active (for what only W&B shows), else None."""
        return figures.wandb_run(self.trainer) if self.trainer.is_global_zero else None

    def reporting(self) -> bool:
        """Whether figures are made now: on rank 0 of a trainer's run, outside Lightning's sanity check."""
        return self._trainer is not None and self.trainer.is_global_zero and not self.trainer.sanity_checking

    def report_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """A table into the run's `figures/<key>.txt` (a block per epoch) and, with W&B, as a W&B table."""
        if not self.reporting() or not rows:
            return
        path = figures.figure_path(self.trainer, key, ".txt")
        figures.write_table(path, f"{key}, epoch {self.current_epoch}", columns, rows)
        if (run := figures.wandb_run(self.trainer)) is not None:
            import wandb

            table = wandb.Table(columns=list(columns), data=[list(row) for row in rows])
            run.log({key: table, "trainer/global_step": self.global_step})

    def report_images(self, key: str, images: Sequence[np.ndarray], captions: Sequence[str], wandb_images=None) -> None:
        """Images (H, W[, 3] uint8) with captions as a grid in `figures/<key>.png` (the latest epoch's) and, with
        W&B, as W&B images (`wandb_images` when given: overlays W&B draws itself)."""
        if not self.reporting() or not len(images):
            return
        figures.save_grid(figures.figure_path(self.trainer, key, ".png"), images, captions)
        if (run := figures.wandb_run(self.trainer)) is not None:
            import wandb

            shown = wandb_images or [wandb.Image(image, caption=c) for image, c in zip(images, captions)]
            run.log({key: shown, "trainer/global_step": self.global_step})

    def report_confusion(self, key: str, matrix: Tensor, class_names: Sequence[str]) -> None:
        """A (true, predicted) count matrix as `figures/<key>.png` and, with W&B, as W&B's confusion-matrix plot."""
        if not self.reporting():
            return
        figures.save_confusion(figures.figure_path(self.trainer, key, ".png"), matrix, class_names)
        if (run := figures.wandb_run(self.trainer)) is not None:
            from litlab.tracking import log_confusion

            log_confusion(run, matrix, class_names, key)

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
