"""Run directories and Weights & Biases: online with a key, offline without one, never a prompt.

Every run has one directory (`run_dir`), named for its experiment and start: `runs/<experiment>/<run id>/` with the
W&B logger or none, where the run id (`new_run_id`, e.g. `2026-12-02_0652-3fa9c1`) is also the W&B run's id; with
another logger, that logger's own directory. `test`, `validate` and a resumed `fit` from a checkpoint of such a run use
its directory and W&B run again; `predict` writes into a fresh `predict-<time>/` inside it. `RunRecord` keeps the
resolved config with the run: `config.yaml` there, the W&B run's config (the nested config itself, not a flattened
copy), and the experiment, trainer config and W&B run id inside every checkpoint. A `litlab tune` trial (`TrialRun`)
is a fit whose directory, W&B group and name the study chooses.
"""

from __future__ import annotations

import netrc
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_wandb_mode(save_dir: str) -> None:
    """Without credentials and without WANDB_MODE, log offline (inherited by DDP workers) and say so in one line.

    wandb's own banner and closing hint would repeat that line in seven more (where the run is, how to sync it): an
    offline run litlab chose is silent unless WANDB_SILENT says otherwise; its log stays in the run's debug.log.
    """
    if os.environ.get("WANDB_MODE") or wandb_has_credentials():
        return
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    rank_zero_info(
        f"W&B: no API key (WANDB_API_KEY or `wandb login`), logging offline under {save_dir}/wandb; "
        f"upload later with `wandb sync {save_dir}/wandb/offline-run-*`."
    )


def fresh_dir(root: str, prefix: str) -> str:
    """A new directory name under root, so a run without a logger never writes over an earlier one."""
    base = Path(root) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return str(path)


def new_run_id() -> str:
    """The run's start (minutes) and six random hex digits: readable, sortable, and unique without the seeded RNG."""
    return f"{time.strftime('%Y-%m-%d_%H%M')}-{secrets.token_hex(3)}"


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run directory a checkpoint was written in (`<run>/checkpoints/<name>.ckpt`), if it sits in one."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def local_run_dir(trainer: L.Trainer) -> Path:
    """This run's directory as this process sees it (rank 0's is the run's: see `run_dir`)."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if isinstance(logger, WandbLogger):  # litlab points its save_dir at the run directory
        return Path(logger.save_dir)
    # mirrors ModelCheckpoint's choice of <save_dir>/<name>/<version>/checkpoints
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version)


def run_dir(trainer: L.Trainer) -> Path:
    """This run's directory, the same on every rank (rank 0 decides; a collective: call it on every rank)."""
    return Path(trainer.strategy.broadcast(str(local_run_dir(trainer))))


@dataclass
class TrialRun:
    """What a `litlab tune` study sets for one trial's fit: its directory, the W&B group (the study) and run name,
    the callbacks it adds (pruning), and what the W&B config records under `tune` (study, trial, parameters)."""

    directory: Path
    group: str
    name: str
    callbacks: list = field(default_factory=list)
    record: dict = field(default_factory=dict)


class RunRecord(SaveConfigCallback):
    """Saves the resolved config to the run directory and W&B, and records it in every checkpoint. `experiment`: the
    experiment's name; `joins_run`: `test`/`validate` logging into a fit's W&B run, whose config stays the fit's;
    `extra`: top-level entries the W&B config adds to the resolved one (a tune trial's `tune`)."""

    def __init__(
        self, *args, experiment: str | None = None, joins_run: bool = False, extra: dict | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.experiment, self.joins_run, self.extra = experiment, joins_run, extra or {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        directory = run_dir(trainer)
        if trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
            path, n = directory / "config.yaml", 1
            while path.exists():  # a resumed run keeps the config it started with
                path, n = directory / f"config-{n}.yaml", n + 1
            self.parser.save(self.config, path, skip_none=False)
            if isinstance(trainer.logger, WandbLogger) and not self.joins_run:
                trainer.logger.experiment.config.update(self.as_dict() | self.extra, allow_val_change=True)
        self.already_saved = True

    def as_dict(self) -> dict:
        return yaml.safe_load(self.parser.dump(self.config, skip_none=False))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        config = self.as_dict()
        wandb_id = trainer.logger.version if isinstance(trainer.logger, WandbLogger) else None
        checkpoint["litlab"] = {
            "experiment": self.experiment,
            "trainer": config.get("trainer"),
            "seed_everything": config.get("seed_everything"),
            "wandb_run_id": wandb_id,
        }


def log_confusion(run, matrix, class_names, key: str = "test/confusion") -> None:
    """A W&B confusion-matrix plot from a (true, predicted) count matrix (torchmetrics' `MulticlassConfusionMatrix`)."""
    import torch
    import wandb

    n = len(matrix)
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n))  # (n*n, 2): every (true, predicted) cell
    samples = pairs.repeat_interleave(matrix.flatten().cpu(), dim=0)  # one row per test example
    plot = wandb.plot.confusion_matrix(
        y_true=samples[:, 0].tolist(),
        preds=samples[:, 1].tolist(),
        class_names=list(class_names),
        title="test confusion",
    )
    run.log({key: plot})
