"""Checkpoints a user hands to `--ckpt_path`: loaded safely, checked, and used as the base config.

A checkpoint written by litlab carries its model and data config (LightningCLI stores them, with their class paths, as
the hyperparameters) and, from `RunRecord`, the trainer config and W&B run id. So:

- `litlab test|validate|predict --ckpt_path X` needs no model arguments: the checkpoint's model and data config are
  applied first, and any `--config` or flag the user gives is applied over them;
- `litlab fit --ckpt_path last.ckpt` also restores the trainer config and re-attaches to the same W&B run;
- a config that selects another experiment than the checkpoint's is refused in one line.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from litlab.errors import LitlabError, first_line

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def find_ckpt_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def load_checkpoint(path: str) -> dict:
    """The checkpoint as a dict, loaded with `weights_only=True`; one-line errors for anything else."""
    file = Path(path)
    if not file.is_file():
        raise LitlabError(f"--ckpt_path {path}: no such file")
    if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; torch.load's own error here speaks of mmap
        raise LitlabError(
            f"--ckpt_path {path} is not a checkpoint: not a torch.save archive (truncated, or another file)"
        )
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a file that is not a (safe) checkpoint
        raise LitlabError(f"--ckpt_path {path} is not a checkpoint that loads safely ({first_line(err)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitlabError(f"--ckpt_path {path} is not a PyTorch Lightning checkpoint (no state_dict)")
    return checkpoint


WEIGHTS_ONLY_KEYS = (  # what a checkpoint needs to be tested, validated or used for predict, but not to resume
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    "datamodule_hyper_parameters",
    "datamodule_hparams_name",
    "litlab",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
)


def weights_only_copy(source: str | Path, target: str | Path) -> Path:
    """`source` without optimizer, scheduler, loop and callback states, written to `target`: the weights, the
    experiment's config and litlab's record, so `litlab test|validate|predict --ckpt_path target` works as with the
    original (with Adam, about a third of the size)."""
    checkpoint = load_checkpoint(str(source))
    torch.save({key: checkpoint[key] for key in WEIGHTS_ONLY_KEYS if key in checkpoint}, target)
    return Path(target)


def _section(checkpoint: dict, key: str) -> dict | None:
    hparams = dict(checkpoint.get(key) or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    return {"class_path": class_path, "init_args": hparams} if class_path else None


def checkpoint_config(checkpoint: dict, subcommand: str) -> dict:
    """The config this checkpoint was trained with, as far as it should carry over to `subcommand`."""
    config = {}
    for key, section in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        if (value := _section(checkpoint, section)) is not None:
            config[key] = value
    record = checkpoint.get("litlab") or {}
    if subcommand == "fit" and record.get("trainer"):
        trainer = record["trainer"]
        logger = trainer.get("logger")
        is_wandb = isinstance(logger, dict) and logger.get("class_path", "").endswith("WandbLogger")
        if is_wandb and record.get("wandb_run_id"):
            logger.setdefault("init_args", {})["id"] = record["wandb_run_id"]
        config["trainer"] = trainer
        if record.get("seed_everything") is not None:
            config["seed_everything"] = record["seed_everything"]
    return config


def with_checkpoint_config(args: list[str]) -> tuple[list[str], dict | None]:
    """`args` with the checkpoint's config inserted right after the subcommand, and the loaded checkpoint."""
    ckpt_path = find_ckpt_path(args)
    position = next((i for i, arg in enumerate(args) if arg in SUBCOMMANDS), None)
    if ckpt_path is None or position is None or "-h" in args or "--help" in args:
        return args, None
    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint_config(checkpoint, args[position])
    if "model" not in config and not any(arg.startswith(("--config", "-c", "--model")) for arg in args):
        raise LitlabError(
            f"--ckpt_path {ckpt_path} does not record its model (not written by litlab): "
            f"add --config configs/<experiment>.yaml"
        )
    if not config:
        return args, checkpoint
    return [*args[: position + 1], "--config", json.dumps(config), *args[position + 1 :]], checkpoint


def check_matches(config, checkpoint: dict, ckpt_path: str) -> None:
    """Refuse a checkpoint of another experiment than the parsed config selects."""
    for key, section in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        saved = (checkpoint.get(section) or {}).get("_class_path")
        chosen = config.get(key) and config[key].get("class_path")
        if saved and chosen and saved != chosen:
            raise LitlabError(
                f"--ckpt_path {ckpt_path} holds a {saved} ({key}), but the config selects {chosen}: "
                f"use the checkpoint of this experiment, or drop --config to use the checkpoint's own"
            )
