"""`best.ckpt` goes to the later of two equally good epochs, is never a NaN epoch, and says which metric is missing."""

from __future__ import annotations

import pytest
import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from litlab.callbacks import BestCheckpoint
from litlab.errors import LitlabError


class Saturated(LightningModule):
    """A model whose validation accuracy is 100 % from the first epoch on."""

    monitor, monitor_mode = "val/acc", "max"

    def __init__(self, accuracies: tuple[float, ...] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.accuracies = accuracies

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.accuracies[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path, accuracies: tuple[float, ...]) -> BestCheckpoint:
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    best = BestCheckpoint()
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=3, callbacks=[best], accelerator="cpu", **quiet)
    trainer.fit(Saturated(accuracies), loader, loader)
    return best


def test_a_tie_goes_to_the_later_epoch(tmp_path):
    best = fit(tmp_path, (1.0, 1.0, 1.0))
    assert best.best_model_path == str(tmp_path / "checkpoints" / "best.ckpt")
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 2


def test_a_worse_or_nan_epoch_is_never_the_best(tmp_path):
    best = fit(tmp_path, (0.5, 0.9, float("nan")))
    assert best.best_model_score == pytest.approx(0.9)
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 1
    best = fit(tmp_path, (0.9, 0.5, 0.7))
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 0


def test_a_metric_validation_did_not_log_is_one_line(tmp_path):
    Saturated.monitor = "val/map_50"
    try:
        logged = r"Saturated is judged by val/map_50, but validation logged \['val/acc'\]"
        with pytest.raises(LitlabError, match=logged):
            fit(tmp_path, (1.0, 1.0, 1.0))
    finally:
        Saturated.monitor = "val/acc"
