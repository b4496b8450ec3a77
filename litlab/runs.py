"""Where a run's files go and which W&B run it is, decided once per command by `place_run`, before anything is built.

    litlab fit --config X.yaml                     <root>/<experiment>/<run id>/    a new W&B run, id <run id>
    litlab fit --ckpt_path <run>/checkpoints/...   <run>/                           the checkpoint's W&B run again
      ... an older checkpoint than the run's newest  <root>/<experiment>/<run id>/    a new W&B run: a branch
    litlab fit inside a SLURM batch job            <root>/<experiment>/slurm-<job>-<config hash>/   (requeue resumes)
    litlab test|validate --ckpt_path <run>/...     <run>/                           joins the fit's W&B run
    litlab predict --ckpt_path <run>/...           <run>/predict-<time>/            (no logger by default)
    --run_dir DIR                                  DIR                              (`litlab tune`'s trial folders)

<root> is `--trainer.default_root_dir` (runs/), <experiment> the config's `experiment` (by default the first `--config`
file's name), <run id> the start time and six random hex digits (`2026-12-02_0652-3fa9c1`). A resume never writes over a
newer checkpoint: from a checkpoint behind the run's newest (its `best.ckpt` after more epochs), the fit continues as a
branch in a new folder, whose `config.yaml` records the checkpoint it started from. Inside a SLURM batch job the folder
is named after the job and the config (`litlab.survival`), so a requeued job resumes its own run from its newest
checkpoint. The Trainer's
`default_root_dir` is set to the run folder, and the logger is pointed at it (`configure_logger`), so Lightning, the
logger and litlab's callbacks all write there. W&B's run is named for the folder: its group is the folder's parent (the
experiment, or a study of `litlab tune`), its name the parent and the folder's name, its tags the experiment and family.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from litlab.catalogue import family
from litlab.errors import LitlabError
from litlab.survival import checkpoint_step, in_slurm_batch_job, newest_checkpoint, position, slurm_run_name
from litlab.tracking import choose_wandb_mode


@dataclass(frozen=True)
class RunPlace:
    """A run's folder; its W&B id (new for a fit, a checkpoint's to resume or join); whether it joins a fit's W&B
    run (test or validate of a fit's checkpoint: its job type differs, its config stays the fit's)."""

    directory: Path
    wandb_id: str
    joins: bool = False
    resume_from: Path | None = None  # a requeued SLURM job's newest checkpoint
    note: str = ""  # a line for the user about where the run goes


def check_writable(directory: Path) -> None:
    """One line when a run folder cannot be made: the nearest existing folder above it is a file or not writable."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LitlabError(f"cannot make the run folder {directory}: {existing} is a file (--trainer.default_root_dir)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LitlabError(f"cannot make the run folder {directory}: {existing} is not writable")


def place_run(config: Namespace, subcommand: str, checkpoint: dict | None, ckpt_path: str | None) -> RunPlace:
    """The run of `subcommand` with this parsed config and checkpoint (see the module docstring)."""
    record = (checkpoint or {}).get("litlab") or {}
    origin = checkpoint_run_dir(ckpt_path) if ckpt_path and record else None
    if config.run_dir is not None:
        return RunPlace(Path(config.run_dir), new_run_id())
    if origin is not None and subcommand == "predict":
        return RunPlace(fresh_dir(origin, "predict"), new_run_id())
    if origin is not None and subcommand == "fit" and (newer := newer_checkpoint(origin, Path(ckpt_path), checkpoint)):
        run_id = new_run_id()
        branch = origin.parent / run_id
        note = f"{ckpt_path} is behind {newer}: this fit continues as a new run, {branch}"
        return RunPlace(branch, run_id, note=note)
    if origin is not None:
        fit_id = record.get("wandb_run_id")
        return RunPlace(origin, fit_id or new_run_id(), joins=subcommand != "fit" and fit_id is not None)
    experiment_dir = Path(config.trainer.default_root_dir or "runs") / config.experiment
    if subcommand == "fit" and ckpt_path is None and in_slurm_batch_job():
        name = slurm_run_name(config.clone().as_dict())
        newest = newest_checkpoint(experiment_dir / name)
        note = f"SLURM job: resuming {newest}" if newest is not None else ""
        return RunPlace(experiment_dir / name, name, resume_from=newest, note=note)
    run_id = new_run_id()
    return RunPlace(experiment_dir / run_id, run_id)


def newer_checkpoint(run: Path, ckpt_path: Path, checkpoint: dict) -> Path | None:
    """The run's newest checkpoint when it is further along than `ckpt_path` (loaded: `checkpoint`), else None."""
    newest = newest_checkpoint(run)
    if newest is None or newest.resolve() == ckpt_path.resolve():
        return None
    return newest if checkpoint_step(newest) > position(checkpoint) else None


def experiment_name(config: Namespace) -> str:
    """The configured `experiment`, else (no config file named it) the model class's name in snake case."""
    if config.experiment:
        return config.experiment
    name = str(config.model.class_path).rsplit(".", 1)[-1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def configure_logger(config: Namespace, place: RunPlace, subcommand: str) -> None:
    """Point the configured logger at the run folder: W&B's files, id, name, group, tags and job type; TensorBoard's
    and CSV's `<save_dir>/<name>/<version>`. Other loggers keep their own settings."""
    logger = config.trainer.logger
    if not isinstance(logger, Namespace) or "class_path" not in logger:
        return
    module, _, name = str(logger.class_path).rpartition(".")
    kind = getattr(importlib.import_module(module), name)
    init, folder = logger.init_args, place.directory
    if issubclass(kind, WandbLogger):
        group = folder.parent.name
        init.save_dir, init.id, init.name, init.group = str(folder), place.wandb_id, f"{group} {folder.name}", group
        init.tags = [config.experiment, family(str(config.model.class_path))]
        init.job_type, init.resume = subcommand, "allow"
        choose_wandb_mode(str(folder))
    elif issubclass(kind, TensorBoardLogger | CSVLogger):
        init.save_dir, init.name, init.version = str(folder.parent.parent), folder.parent.name, folder.name


def new_run_id() -> str:
    """The run's start (minutes) and six random hex digits: readable, sortable, and unique without the seeded RNG."""
    return f"{time.strftime('%Y-%m-%d_%H%M')}-{secrets.token_hex(3)}"


def fresh_dir(root: Path, prefix: str) -> Path:
    """A new folder name under root (`<prefix>-<date>-<time>`, numbered when taken): no run writes over another."""
    base = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint was written in (`<run>/checkpoints/<name>.ckpt`), if it sits in one."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder, the same on every rank: each DDP process places its own run, and rank 0's is the run's. A
    collective: call it on every rank (rank 0 alone may read `trainer.default_root_dir`)."""
    return Path(trainer.strategy.broadcast(trainer.default_root_dir))
