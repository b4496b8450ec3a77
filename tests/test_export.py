"""ONNX export of the image classifiers: the file loads in onnxruntime and gives PyTorch's logits, at any batch size."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import cli, run_litlab
from registry import config, family

from litlab.export import model_from_checkpoint


@pytest.mark.parametrize("experiment", ["fashion_cnn", "cifar10_resnet18_finetune"])
def test_onnx_export_matches_pytorch(experiment, tmp_path):
    cli(
        "fit",
        "--config",
        config(experiment),
        *family(experiment)["tiny"],
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    result = run_litlab("--ckpt_path", best, "--output", tmp_path / "model.onnx", program="litlab-export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in result.stdout

    model, data_class = model_from_checkpoint(str(best))
    images = torch.rand(7, data_class.channels, *data_class.size)  # another batch size than the export's
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
