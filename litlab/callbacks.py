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
    """Gives each DDP rank random numbers of its own, keeps every rank's random states in checkpoints and puts them
    back on resume.

    seed_everything seeds every rank alike, as the initial weights need; past that, ranks drawing the same numbers
    would mask, shift and flip their different batches alike (dropout, the augmentations on the device). So when a fit
    starts, every rank but 0 reseeds torch (CPU and CUDA), numpy and Python from one draw of the state the ranks share
    and its rank: rank 0 draws what a single process draws, and a seeded run repeats on every rank.

    Checkpoints hold the states (torch, CUDA, numpy, Python) of every rank, gathered when the checkpoint is written,
    which every rank does together. Lightning restores callback states just before training starts and runs the sanity
    check with the random state isolated, so each rank of a resumed run draws the same shuffles and dropout masks as in
    an uninterrupted one; resumed on another number of ranks, rank 0 takes the first rank's states and the others
    reseed from them. States are plain tensors and tuples: checkpoints stay loadable with `weights_only=True`.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None  # set while fitting: the states are saved per rank and put back
        self._restored = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # setup runs before Lightning restores callback states
        self._trainer = trainer if stage == "fit" else None
        self._restored = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._restored:  # some strategies restore after this hook: load_state_dict then has the last word
            _reseed_by_rank(trainer)

    def state_dict(self) -> dict[str, Any]:
        state = _random_states()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return state
        ranks = [None] * trainer.world_size  # our own states between our own processes, never a file's contents
        torch.distributed.all_gather_object(ranks, state)
        return {"ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Lightning restores callback states for test and predict too, where the run's own seed must rule (sampled
        # predictions): the states are put back only when training resumes.
        trainer = self._trainer
        if trainer is None:
            return
        ranks = state.get("ranks", [state])
        if len(ranks) == trainer.world_size:
            _set_random_states(ranks[trainer.global_rank])
        else:
            _set_random_states(ranks[0])
            _reseed_by_rank(trainer)
        self._restored = True


def _random_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _reseed_by_rank(trainer: L.Trainer) -> None:
    """Every rank but 0 reseeds from a draw of its current torch state (shared by the ranks) and its rank."""
    if trainer.global_rank == 0:
        return
    shared = int(torch.randint(2**62, ()))
    torch_seed, other_seed = np.random.SeedSequence([shared, trainer.global_rank]).generate_state(2, dtype=np.uint64)
    torch.manual_seed(int(torch_seed))  # the CPU's generator and every CUDA device's
    np.random.seed(int(other_seed) % 2**32)
    random.seed(int(other_seed))


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
