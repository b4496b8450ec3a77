"""The callbacks of every litlab run: `best.ckpt` and `last.ckpt`, predictions written as JSON lines, checkpoints
uploaded to W&B. Which run gets which: `configs/trainer/default.yaml` and `cli.run_callbacks`."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, Checkpoint, ModelCheckpoint

from litlab.checkpoints import weights_only_copy
from litlab.errors import LitlabError
from litlab.runs import run_dir
from litlab.tracking import wandb_run


class BestCheckpoint(Checkpoint):
    """`best.ckpt`: written at the end of each validation whose value of the experiment's declared metric
    (`Experiment.monitor`; higher is better when `monitor_mode` is "max") is at least as good as the best so far.

    A tie goes to the later checkpoint: a metric that saturates (exact match at 100 % of the validation set) would
    otherwise keep the first epoch to reach it, not the model further along its schedule. A NaN is never the best.
    The folder defaults to the run's `checkpoints/`; the best value and path are kept in `last.ckpt` for a resume.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "best") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.monitor, self.mode = "", "max"
        self.best_model_score: float | None = None
        self.best_model_path = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.monitor, self.mode = pl_module.monitor, pl_module.monitor_mode
        folder = Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "checkpoints"
        self.dirpath = Path(trainer.strategy.broadcast(str(folder)))  # rank 0's run folder on every rank

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        if self.monitor not in trainer.callback_metrics:
            logged = sorted(key for key in trainer.callback_metrics if key.startswith("val/"))
            raise LitlabError(f"{type(pl_module).__name__} is judged by {self.monitor}, but validation logged {logged}")
        value = float(trainer.callback_metrics[self.monitor])  # one host sync per validation
        best = self.best_model_score
        improved = best is None or (value >= best if self.mode == "max" else value <= best)
        if trainer.strategy.reduce_boolean_decision(not math.isnan(value) and improved):  # every rank alike
            self.best_model_score, self.best_model_path = value, str(self.dirpath / f"{self.filename}.ckpt")
            trainer.save_checkpoint(self.best_model_path, weights_only=False)  # whole: optimizer and loops too

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_model_score, self.best_model_path = state_dict["best_model_score"], state_dict["best_model_path"]


def best_checkpoint(trainer: L.Trainer) -> BestCheckpoint | None:
    """The fit's `best.ckpt` callback, once it has written one (None without checkpointing or validation)."""
    best = next((c for c in trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)), None)
    return best if best is not None and best.best_model_path else None


def last_checkpoint(dirpath: str | Path) -> ModelCheckpoint:
    """`last.ckpt`, replaced after every training epoch, whether or not it validated (Lightning's `save_last` only
    follows the saves of improvements)."""
    return ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, save_on_train_epoch_end=True)


class PredictionWriter(BasePredictionWriter):
    """Prints one line per input and writes `predictions.jsonl` (one JSON object per input) in the run folder.

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


class CheckpointArtifacts(Callback):
    """Uploads the fit's best and last checkpoints to W&B when it ends, as versions of the model artifact
    `model-<run id>` aliased `best` and `last` (`configs/logger/wandb.yaml`).

    With `weights_only`, each goes up as a `checkpoints.weights_only_copy`: no optimizer, scheduler or loop state, so
    bart-base's 1.7 GB checkpoint uploads as about 0.56 GB; the local checkpoints stay whole, for resuming
    (`configs/logger/wandb_weights.yaml`).
    """

    def __init__(self, weights_only: bool = False) -> None:
        self.weights_only = weights_only

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = wandb_run(trainer)
        if run is None or not trainer.is_global_zero:
            return
        import wandb

        uploads: dict[str, list[str]] = {}
        for callback in trainer.checkpoint_callbacks:
            path = getattr(callback, "best_model_path", "")
            if path and Path(path).is_file():
                uploads.setdefault(path, []).append("best" if isinstance(callback, BestCheckpoint) else "last")
        with tempfile.TemporaryDirectory() as folder:
            for path, aliases in uploads.items():
                upload = weights_only_copy(path, Path(folder) / Path(path).name) if self.weights_only else Path(path)
                metadata = {"original_filename": Path(path).name, "weights_only": self.weights_only}
                artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata)
                artifact.add_file(str(upload), name="model.ckpt")  # copied into W&B's staging area now
                run.log_artifact(artifact, aliases=aliases)
