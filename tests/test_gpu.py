"""One real GPU run per experiment with the GPU preset (bf16-mixed; in-memory datasets held on the device); skipped
without CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import EXPERIMENTS, cli, config, tiny

from datamodules.in_memory import InMemoryDataModule

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_gpu_preset_trains_in_bf16_with_data_on_device(experiment, tmp_path):
    run = cli(
        "fit",
        "--config",
        config(experiment),
        *tiny(experiment),
        "--config",
        config("trainer/gpu"),
        "--trainer.max_epochs=2",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    assert run.trainer.precision == "bf16-mixed" and run.trainer.strategy.root_device.type == "cuda"
    if isinstance(run.datamodule, InMemoryDataModule):  # small datasets live on the GPU
        assert all(t.device.type == "cuda" for t in run.datamodule.splits["train"].values())
    assert torch.isfinite(run.trainer.callback_metrics["val/loss"])
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    tested = cli(
        "test",
        "--ckpt_path",
        best,
        *tiny(experiment),
        "--config",
        config("trainer/gpu"),
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    assert tested.model.monitor.replace("val/", "test/") in tested.trainer.callback_metrics
