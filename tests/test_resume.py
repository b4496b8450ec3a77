"""Resuming from `last.ckpt` continues exactly: same weights as a run that was never interrupted."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch
from conftest import cli, config, tiny

from litlab.figures import LearningCurves
from litlab.rng import ResumableRNG, _random_states, _reseed_by_rank, _set_random_states

ADDER_TINY = tiny("adder_transformer")
XOR_TINY = tiny("xor_mlp")


class StopAfterFirstEpoch(L.Callback):
    """Interrupts a run the way a user would see it stop: cleanly, after its first epoch's checkpoint."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            trainer.should_stop = True


def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path):
    # dropout on and shuffled data: the resumed run must also restore the random states
    args = [
        "--config",
        config("adder_transformer"),
        *ADDER_TINY,
        "--model.dropout=0.1",
        "--trainer.max_epochs=2",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]
    whole = cli("fit", *args, "--trainer.default_root_dir=whole").model.state_dict()

    cli("fit", *args, "--trainer.callbacks+=test_resume.StopAfterFirstEpoch")
    (last,) = tmp_path.glob("runs/adder_transformer/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = cli("fit", *args, "--ckpt_path", last)

    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 2 * 8  # 512 / 64 batches per epoch
    resumed_state = resumed.model.state_dict()
    assert resumed_state.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed_state[name]), name


def test_last_checkpoint_follows_every_epoch_when_validation_is_rarer(tmp_path):
    cli(
        "fit",
        "--config",
        config("xor_mlp"),
        *XOR_TINY,
        "--trainer.max_epochs=3",
        "--trainer.check_val_every_n_epoch=5",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    (last,) = tmp_path.glob("runs/**/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 2  # the third epoch's end, though none validated


def test_ranks_past_zero_reseed_from_the_shared_state_and_their_rank():
    """Rank 0 keeps the single-process stream; every other rank gets its own, the same each time from the same state
    (the two-process run and its resumption: tests/test_ddp.py)."""

    def draws(rank: int) -> torch.Tensor:
        torch.manual_seed(42)
        _reseed_by_rank(SimpleNamespace(global_rank=rank))
        return torch.rand(4)

    torch.manual_seed(42)
    single = torch.rand(4)
    assert torch.equal(draws(0), single)
    assert torch.equal(draws(1), draws(1)) and torch.equal(draws(2), draws(2))
    assert len({tuple(draws(rank).tolist()) for rank in range(4)}) == 4

    # a checkpoint of one process resumed as rank 1 of two: rank 0's states, then rank 1's own stream
    torch.manual_seed(42)
    saved = _random_states()
    rng = ResumableRNG()
    rng.setup(SimpleNamespace(global_rank=1, world_size=2), None, "fit")
    torch.manual_seed(7)
    rng.load_state_dict(saved)
    resumed = torch.rand(4)
    assert torch.equal(resumed, draws(1))
    _set_random_states(saved)
    assert torch.equal(torch.rand(4), single)


def test_random_states_of_gpus_the_resume_lacks_are_left_out(monkeypatch):
    """A checkpoint written with three GPUs visible, resumed with one: only device 0's state is put back."""
    saved = {**_random_states(), "cuda": [torch.full((8,), float(i)).byte() for i in range(3)]}
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.update(enumerate(states)))
    _set_random_states(saved)
    assert list(restored) == [0] and torch.equal(restored[0], saved["cuda"][0])


def test_learning_curves_go_on_from_the_first_epoch_after_a_resume(tmp_path):
    args = ["--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=3", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    cli("fit", *args, "--trainer.callbacks+=test_resume.StopAfterFirstEpoch")
    (last,) = tmp_path.glob("runs/xor_mlp/*/checkpoints/last.ckpt")
    resumed = cli("fit", *args, "--ckpt_path", last)
    curves = next(c for c in resumed.trainer.callbacks if isinstance(c, LearningCurves))
    assert [epoch for epoch, _ in curves.history["val/loss"]] == [0, 1, 2]
    assert [epoch for epoch, _ in curves.history["train/loss"]] == [0, 1, 2]
    torch.load(last, weights_only=True)  # the curves keep the checkpoint loadable safely
