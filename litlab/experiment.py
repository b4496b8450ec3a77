"""What every litlab LightningModule shares, so the launcher and the tests can treat all experiments alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from torch import Tensor, nn
from torchmetrics import Metric

from litlab import figures
from litlab.adapters import Adaptation
from litlab.dropout import use_fast_dropout
from litlab.errors import LitlabError
from litlab.optim import LRSchedulerCallable, OptimizerCallable, configure_optimizers
from litlab.tracking import log_confusion, wandb_run


class Experiment(L.LightningModule):
    """A LightningModule with one step body for training, validation and test.

    Subclasses implement `_shared_step(batch, stage)` (stage is "train", "val" or "test"; it returns the loss and logs
    `{stage}/<metric>` through torchmetrics objects), `predict_step` (a list of records with at least "input" and
    "output"), and declare:

    - `monitor`, `monitor_mode`: the validation metric `best.ckpt` is chosen by, and whether higher ("max") is better;
    - `prediction_format`: the `str.format` template of the line `litlab predict` prints per record.

    Subclass constructors take their own arguments and pass the rest on (`**kwargs`): this constructor takes the
    optimizer and schedule every experiment shares and saves every argument of the chain as the hyperparameters.
    Figures: `report_table`, `report_images`, `report_confusion`, `report_lines`, from a batch kept by
    `keep_for_figures`; metrics of each stage: `per_stage`.

    The contract with the data. An experiment reads its DataModule only through `from_data(name)`: a public attribute
    the DataModule documents (`classes`, `vocab`, `vocab_size`, `pad_id`, `tokenizer`, `prompts`), never its private
    state; what evaluation and predict need per example (texts, file names, image sizes) travels in the batch.
    Constructor arguments that the data decides (a class count, a vocabulary size) are listed in `data_arguments`
    and default to None; the layers they size are created in `build`, which reads them with `data_argument(name)`:
    the configured value or, at the first fit, the DataModule's attribute of the same name. `build` runs once, in
    Lightning's `configure_model` hook: after the data is set up, before weights are trained or restored (and in
    `load_from_checkpoint`; `litlab-export` calls it itself). `on_save_checkpoint` records
    what the data decided (and anything else the model learned, see `learned`) in the checkpoint's hyperparameters,
    so a checkpoint rebuilds its model without the data. The hyperparameters are never rewritten after `__init__`.
    """

    monitor: ClassVar[str]
    monitor_mode: ClassVar[Literal["min", "max"]]
    prediction_format: ClassVar[str] = "{input} -> {output}"
    data_arguments: ClassVar[tuple[str, ...]] = ()
    compile_mode: str | None = None  # `litlab fit --compile=true` (or a torch.compile mode) sets it for the run
    adaptation: Adaptation | None = None  # `--init_from`, `--lora` (`litlab.adapters`): set by the launcher
    lora_targets: ClassVar[tuple[str, ...]] = ()  # the layers `--lora` adapts by default (peft's `target_modules`)
    lora_train_fully: ClassVar[tuple[str, ...]] = ()  # and the modules it trains whole by default (a new head)
    request_settings: ClassVar[tuple[str, ...]] = ()  # predict's hyperparameters a `litlab serve` request may set
    data_outside_trainer: L.LightningDataModule | None = None  # what `from_data` reads without a Trainer (serving)

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        fast_dropout: bool = False,
    ) -> None:
        """
        Args:
            optimizer: any `torch.optim` optimizer and its arguments (`--model.optimizer=SGD --model.optimizer.lr=.1`).
            lr_scheduler: None (a constant rate), `litlab.optim.WarmupDecay` or a torch scheduler, sized from the run
                (see `litlab.optim`).
            fast_dropout: draw dropout masks on the CPU with `litlab.dropout.FastDropout` (the same distribution,
                two to three times as fast as torch's; elsewhere it changes nothing).
        """
        super().__init__()
        self.save_hyperparameters(logger=False)  # the arguments of every constructor of the chain (`RunRecord` logs)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.learned: dict[str, Any] = {}  # constructor arguments decided at the first fit, for the checkpoint
        self.figure_batch: dict[str, Any] | None = None  # see `keep_for_figures`
        self.requested: dict[str, Any] = {}  # a served request's own `request_settings` (`litlab.serve`), while it runs
        self._built = False

    def build(self) -> None:
        """Create the layers sized by the data (nothing by default)."""

    def configure_model(self) -> None:
        if not self._built:
            self.build()
            if self.hparams.get("fast_dropout"):
                use_fast_dropout(self)
            if self.adaptation is not None:
                self.adaptation.apply(self)
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

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or None (Lightning's `trainer` raises when there is none)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def from_data(self, name: str) -> Any:
        """The DataModule's public attribute `name` (one line when there is no DataModule or it lacks one)."""
        trainer = self.attached_trainer()
        data = trainer.datamodule if trainer is not None else self.data_outside_trainer
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

    def setting(self, name: str) -> Any:
        """A hyperparameter of predict (one of `request_settings`): the served request's own, else the configured."""
        return self.requested.get(name, self.hparams[name])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("hyper_parameters", {}).update(self.learned)
        if self.adaptation is not None:  # the base it started from; an adapter's checkpoint keeps the adapter alone
            checkpoint["adaptation"] = self.adaptation.record()
            checkpoint["state_dict"] = self.adaptation.saved_state(self, checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if (checkpoint.get("adaptation") or {}).get("partial"):  # the base's weights are in place (`configure_model`)
            checkpoint["state_dict"] = {**self.state_dict(), **checkpoint["state_dict"]}

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
        groups = self.parameter_groups()
        if self.adaptation is not None and (scales := self.adaptation.lr_scales(self)):
            groups["lr_scales"] = scales
        return configure_optimizers(self, self.optimizer, self.lr_scheduler, steps, **groups)

    def wandb_run(self):
        """The W&B run on rank 0 when a WandbLogger is active (for what only W&B shows), else None."""
        return wandb_run(self.trainer) if self.trainer.is_global_zero else None

    def reporting(self) -> bool:
        """Whether figures are made now: on rank 0 of a trainer's run, outside Lightning's sanity check."""
        trainer = self.attached_trainer()
        return trainer is not None and trainer.is_global_zero and not trainer.sanity_checking

    def keep_for_figures(self, **items: Any) -> None:
        """Keeps the `items` of the epoch's first validation batch (tensors detached, still on the device) for the
        figures drawn at the epoch's end (`figure_batch`); only where figures are made (`reporting`)."""
        if self.figure_batch is None and self.reporting():
            self.figure_batch = {k: v.detach() if isinstance(v, Tensor) else v for k, v in items.items()}

    def on_validation_epoch_start(self) -> None:
        self.figure_batch = None

    def report_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """A table into the run's `figures/<key>.txt` (a block per epoch) and, with W&B, as a W&B table."""
        if not self.reporting() or not rows:
            return
        path = figures.figure_path(self.trainer, key, ".txt")
        figures.write_table(path, f"{key}, epoch {self.current_epoch}", columns, rows)
        if (run := wandb_run(self.trainer)) is not None:
            import wandb

            table = wandb.Table(columns=list(columns), data=[list(row) for row in rows])
            run.log({key: table, "trainer/global_step": self.global_step})

    def report_images(self, key: str, images: Sequence[np.ndarray], captions: Sequence[str], wandb_images=None) -> None:
        """Images (H, W[, 3] uint8) with captions as a grid in `figures/<key>.png` (the latest epoch's) and, with
        W&B, as W&B images (`wandb_images` when given: overlays W&B draws itself)."""
        if not self.reporting() or not len(images):
            return
        figures.save_grid(figures.figure_path(self.trainer, key, ".png"), images, captions)
        if (run := wandb_run(self.trainer)) is not None:
            import wandb

            shown = wandb_images or [wandb.Image(image, caption=c) for image, c in zip(images, captions)]
            run.log({key: shown, "trainer/global_step": self.global_step})

    def report_confusion(self, key: str, matrix: Tensor, class_names: Sequence[str]) -> None:
        """A (true, predicted) count matrix as `figures/<key>.png` and, with W&B, as W&B's confusion-matrix plot."""
        if not self.reporting():
            return
        figures.save_confusion(figures.figure_path(self.trainer, key, ".png"), matrix, class_names)
        if (run := wandb_run(self.trainer)) is not None:
            log_confusion(run, matrix, class_names, key)

    def report_lines(
        self, key: str, lines: dict[str, tuple[Tensor, Tensor]], points: tuple[Tensor, Tensor], **kw: Any
    ) -> None:
        """y(x) lines over sample points as `figures/<key>.png` (see `figures.save_lines`) and, with W&B, that image."""
        if not self.reporting():
            return
        path = figures.figure_path(self.trainer, key, ".png")
        as_numpy = {name: tuple(t.detach().float().cpu().numpy() for t in xy) for name, xy in lines.items()}
        drawn = figures.save_lines(path, as_numpy, tuple(t.detach().float().cpu().numpy() for t in points), **kw)
        if drawn and (run := wandb_run(self.trainer)) is not None:
            import wandb

            run.log({key: wandb.Image(str(path)), "trainer/global_step": self.global_step})

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


def per_stage(make: Callable[[], Metric], stages: Sequence[str] = ("val", "test")) -> nn.ModuleDict:
    """A metric object of its own for each stage (`self.acc = per_stage(BinaryAccuracy)`; `self.acc[stage]`)."""
    return nn.ModuleDict({stage: make() for stage in stages})


def experiment_from_config(model: dict | Namespace) -> Experiment:
    """The Experiment a config's `model` section describes (class path and arguments), built without a Trainer."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Experiment, "model")
    given = model.as_dict() if isinstance(model, Namespace) else model
    return parser.instantiate(parser.parse_object({"model": given})).model
