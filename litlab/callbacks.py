"""Callbacks the launcher adds to every run (see `cli.LitlabCLI.instantiate_trainer`)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from torch import Tensor

from litlab.checkpoints import weights_only_copy
from litlab.figures import wandb_run
from litlab.tracking import run_dir


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt` by the experiment's declared metric; a tie goes to the later checkpoint.

    A metric that saturates (exact match at 100 % of the validation set) would otherwise keep the first epoch to reach
    it, not the model further along its schedule.
    """

    def __init__(self, monitor: str, mode: str, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1)

    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        if current is None or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        best = self.best_k_models[self.kth_best_model_path]
        at_least_as_good = current >= best if self.mode == "max" else current <= best
        return trainer.strategy.reduce_boolean_decision(bool(at_least_as_good))  # all ranks decide alike


def last_checkpoint(dirpath: str | None = None) -> ModelCheckpoint:
    """`last.ckpt`, replaced after every training epoch, whether or not it validated (Lightning's `save_last` only
    follows the saves of improvements)."""
    return ModelCheckpoint(
        dirpath=dirpath, filename="last", save_top_k=1, save_on_train_epoch_end=True
    )  # also when val is rarer


class PredictionWriter(BasePredictionWriter):
    """Prints one line per input and writes `predictions.jsonl` (one JSON object per input) in the run directory.

    `predict_step` returns a list of records with at least "input" and "output"; the module's `prediction_format`
    (a `str.format` template over the record) makes the printed line.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.path: Path | None = None
        self.file = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        directory = run_dir(trainer)
        name = "predictions.jsonl" if trainer.world_size == 1 else f"predictions.rank{trainer.global_rank}.jsonl"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        self.file = self.path.open("x", encoding="utf-8")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: list[dict], batch_indices, batch, batch_idx: int, dataloader_idx: int
    ) -> None:
        template = pl_module.prediction_format
        for record in prediction:
            print(template.format(**record))
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.file.close()
        print(f"predictions written to {self.path}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()


class ResumableRNG(Callback):
    """Keeps the random states (torch, CUDA, numpy, Python) in checkpoints and puts them back on resume.

    Lightning restores callback states just before training starts and runs the sanity check with the random state
    isolated, so the resumed run draws the same shuffles and dropout masks as an uninterrupted one. States are plain
    tensors and tuples: checkpoints stay loadable with `weights_only=True`.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._fitting = stage == "fit"  # setup runs before Lightning restores callback states

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Lightning restores callback states for test and predict too, where the run's own seed must rule (sampled
        # predictions): the states are put back only when training resumes.
        if not getattr(self, "_fitting", False):
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class WeightsArtifacts(Callback):
    """Uploads the fit's best and last checkpoints to W&B as weights-only model artifacts (`weights_only_copy`: no
    optimizer state, so bart-base's 1.7 GB checkpoint uploads as about 0.56 GB); the local checkpoints stay whole, for
    resuming. Use it instead of WandbLogger's `log_model` (`configs/logger/wandb_weights.yaml`). The artifact is
    `model-<run id>`, as Lightning names it, one version aliased `best`, one `last`."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = wandb_run(trainer)
        if run is None or not trainer.is_global_zero:
            return
        import wandb

        uploads: dict[str, list[str]] = {}
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
                alias = "best" if isinstance(callback, BestCheckpoint) else "last"
                uploads.setdefault(callback.best_model_path, []).append(alias)
        with tempfile.TemporaryDirectory() as folder:
            for path, aliases in uploads.items():
                copy = weights_only_copy(path, Path(folder) / Path(path).name)
                metadata = {"original_filename": Path(path).name, "weights_only": True}
                artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata)
                artifact.add_file(str(copy), name="model.ckpt")  # copied into W&B's staging area now
                run.log_artifact(artifact, aliases=aliases)
