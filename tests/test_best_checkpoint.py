"""`best.ckpt` goes to the later of two equally good epochs: litlab overrides `ModelCheckpoint.check_monitor_top_k`, so
this fails loudly if a Lightning upgrade stops calling it."""

from __future__ import annotations

import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from litlab.callbacks import BestCheckpoint


class Saturated(LightningModule):
    """A model whose validation accuracy is 100 % from the first epoch on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_tie_goes_to_the_later_epoch(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    best = BestCheckpoint("val/acc", "max")
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=3, callbacks=[best], accelerator="cpu", **quiet)
    trainer.fit(Saturated(), loader, loader)
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 2
