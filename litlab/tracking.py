"""Weights & Biases, online with a key and offline without one (never a prompt), and the record a run keeps of its
config: `config.yaml` in the run folder, the W&B run's config (the nested config itself, not a flattened copy), and the
experiment, trainer config and W&B run id inside every checkpoint (`checkpoints.checkpoint_config` reads them back)."""

from __future__ import annotations

import copy
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from litlab.masking import mask
from litlab.survival import atomic_file


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
    if rank_zero_only.rank == 0:  # the process that starts the run: silent from now on, the settings it checks included
        import wandb

        wandb.setup()
    rank_zero_info(
        f"W&B: no API key (WANDB_API_KEY or `wandb login`), logging offline under {save_dir}/wandb; "
        f"upload later with `wandb sync {save_dir}/wandb/offline-run-*`."
    )


def wandb_run(trainer: L.Trainer):
    """The W&B run of the trainer's WandbLogger (rank 0's), or None."""
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    return loggers[0].experiment if loggers else None


class RunRecord(SaveConfigCallback):
    """Saves the resolved config (credentials masked) into the run folder (`config.yaml`; a resumed or tested run adds
    `config-1.yaml`, ...) and, unless the run joins a fit's W&B run (`joins_run`), into the W&B run's config; records
    the experiment, the trainer config, the seed and the W&B run id in every checkpoint."""

    def __init__(self, *args, joins_run: bool = False, **kwargs) -> None:
        super().__init__(*args, save_to_log_dir=False, **kwargs)
        self.joins_run = joins_run
        self._as_dict: dict | None = None

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        directory = Path(trainer.default_root_dir)  # rank 0's: the run folder (`runs.run_dir`)
        directory.mkdir(parents=True, exist_ok=True)
        path, n = directory / "config.yaml", 1
        while path.exists():  # a resumed run keeps the config it started with
            path, n = directory / f"config-{n}.yaml", n + 1
        with atomic_file(path, "w") as file:
            file.write(yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True))
        if isinstance(trainer.logger, WandbLogger) and not self.joins_run:
            trainer.logger.experiment.config.update(self.as_dict(), allow_val_change=True)

    def as_dict(self) -> dict:
        """The resolved config, credentials masked (`litlab.masking`): what config.yaml, W&B and checkpoints hold.
        Dumped once per run (it does not change): each dump takes about 0.1 s, which every checkpoint paid before."""
        if self._as_dict is None:
            self._as_dict = mask(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        return copy.deepcopy(self._as_dict)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        config = self.as_dict()
        checkpoint["litlab"] = {
            "experiment": config.get("experiment"),
            "trainer": config.get("trainer"),
            "seed_everything": config.get("seed_everything"),
            "wandb_run_id": trainer.logger.version if isinstance(trainer.logger, WandbLogger) else None,
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
