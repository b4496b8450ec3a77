"""Checkpoints a user hands to `--ckpt_path`: loaded safely, checked, and used as the base config.

A checkpoint written by litlab carries its model and data config (LightningCLI stores them, with their class paths, as
the hyperparameters) and, from `RunRecord`, the trainer config and W&B run id. So:

- `litlab test|validate|predict --ckpt_path X` needs no model arguments: the checkpoint's experiment, model and data
  config are applied first (`checkpoint_config`), and any `--config` or flag the user gives is applied over them;
- `litlab fit --ckpt_path last.ckpt` also restores the trainer config and the seed (`runs` re-attaches the W&B run);
- a config that selects another experiment than the checkpoint's is refused in one line (`check_matches`).
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

import torch

from litlab.errors import LitlabError, first_line


def load_checkpoint(path: str, option: str = "--ckpt_path") -> dict:
    """The checkpoint as a dict, loaded with `weights_only=True`; one-line errors (naming `option`) for anything
    else."""
    file = Path(path)
    if not file.is_file():
        raise LitlabError(f"{option} {path}: no such file")
    if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; torch.load's own error here speaks of mmap
        raise LitlabError(f"{option} {path} is not a checkpoint: not a torch.save archive (truncated, or another file)")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a file that is not a (safe) checkpoint
        raise LitlabError(f"{option} {path} is not a checkpoint that loads safely ({first_line(err)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitlabError(f"{option} {path} is not a PyTorch Lightning checkpoint (no state_dict)")
    return checkpoint


TRAINING_STATE_KEYS = (  # what resuming needs and testing, validating or predicting does not
    "optimizer_states",
    "lr_schedulers",
    "loops",
    "callbacks",
)


def weights_only(checkpoint: dict) -> dict:
    return {key: value for key, value in checkpoint.items() if key not in TRAINING_STATE_KEYS}


def weights_only_copy(source: str | Path, target: str | Path) -> Path:
    """`source` without optimizer, scheduler, loop and callback states, written to `target`: the weights, the
    experiment's config, what its DataModule learned (a vocabulary) and litlab's record, so
    `litlab test|validate|predict --ckpt_path target` works as with the original (with Adam, a third of the size)."""
    checkpoint = load_checkpoint(str(source))
    torch.save(weights_only(checkpoint), target)
    return Path(target)


def _section(checkpoint: dict, key: str) -> dict | None:
    hparams = dict(checkpoint.get(key) or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    return {"class_path": class_path, "init_args": hparams} if class_path else None


def recorded_class(section: dict) -> type:
    """The class a recorded config section names (`{"class_path": "datamodules.xor.XorData", ...}`)."""
    module, name = section["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def recorded_experiment(ckpt_path: str) -> tuple[dict, dict]:
    """A litlab checkpoint (loaded safely) and its predict config, which must hold its model and data: what a
    command that runs without a config (`litlab serve`, `litlab-export`) needs; one line otherwise."""
    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint_config(checkpoint, "predict")
    if "model" not in config or "data" not in config:
        raise LitlabError(f"--ckpt_path {ckpt_path} does not record its model and data (not written by litlab)")
    return checkpoint, config


def checkpoint_config(checkpoint: dict, subcommand: str) -> dict:
    """The config this checkpoint was trained with, as far as it carries over to `subcommand`; a one-line error when
    it records no model (not written by litlab)."""
    config = {}
    for key, section in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        if (value := _section(checkpoint, section)) is not None:
            config[key] = value
    record = checkpoint.get("litlab") or {}
    if record.get("experiment"):
        config["experiment"] = record["experiment"]
    if subcommand == "fit":
        config |= {key: record[key] for key in ("trainer", "seed_everything") if record.get(key) is not None}
    adaptation = checkpoint.get("adaptation") or {}  # `litlab.adapters`: the base and the adapters shape the model
    if adaptation.get("partial"):
        config["init_from"] = adaptation["init_from"]
    if adaptation.get("lora"):
        config["lora"] = adaptation["lora"]
    return config


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
