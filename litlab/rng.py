"""Random numbers of its own for each DDP rank, kept in checkpoints and put back on resume (`ResumableRNG`)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


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
    reseed from them. A resume that sees fewer GPUs than the checkpoint's process did puts back the states of the
    devices it has (a device it has and the checkpoint lacks keeps its seed). States are plain tensors and tuples:
    checkpoints stay loadable with `weights_only=True`.
    """

    def __init__(self) -> None:
        self.fitting: L.Trainer | None = None  # set while fitting: the states are saved per rank and put back
        self._restored = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # setup runs before Lightning restores callback states
        self.fitting = trainer if stage == "fit" else None
        self._restored = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._restored:  # some strategies restore after this hook: load_state_dict then has the last word
            _reseed_by_rank(trainer)

    def state_dict(self) -> dict[str, Any]:
        state = _random_states()
        trainer = self.fitting
        if trainer is None or trainer.world_size == 1:
            return state
        ranks = [None] * trainer.world_size  # our own states between our own processes, never a file's contents
        torch.distributed.all_gather_object(ranks, state)
        return {"ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Lightning restores callback states for test and predict too, where the run's own seed must rule (sampled
        # predictions): the states are put back only when training resumes.
        trainer = self.fitting
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
    if "cuda" in state and torch.cuda.is_available():  # only devices that exist: a resume may see fewer GPUs
        for device, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


def _reseed_by_rank(trainer: L.Trainer) -> None:
    """Every rank but 0 reseeds from a draw of its current torch state (shared by the ranks) and its rank."""
    if trainer.global_rank == 0:
        return
    shared = int(torch.randint(2**62, ()))
    torch_seed, other_seed = np.random.SeedSequence([shared, trainer.global_rank]).generate_state(2, dtype=np.uint64)
    torch.manual_seed(int(torch_seed))  # the CPU's generator and every CUDA device's
    np.random.seed(int(other_seed) % 2**32)
    random.seed(int(other_seed))
