"""ONNX export (the dynamo exporter, and the TorchScript one as a fallback) of the image classifiers and the character
models: the file loads in onnxruntime and gives PyTorch's logits at other batch sizes (and text lengths) than the
export's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import cli, config, run_litlab, tiny

from litlab.export import model_from_checkpoint


def export_a_short_fit(experiment: str, tmp_path, exporter: str = "dynamo", *overrides: str) -> Path:
    """Fit the experiment for two batches, export its best checkpoint to tmp_path/model.onnx; the checkpoint."""
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    cli("fit", "--config", config(experiment), *tiny(experiment), *short, *quiet, *overrides)
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    output = ("--output", tmp_path / "model.onnx", "--exporter", exporter)
    result = run_litlab("--ckpt_path", best, *output, program="litlab-export")
    assert result.returncode == 0 and "exported" in result.stdout, result.stderr[-3000:]
    return best


ENSEMBLE = ("--model.init_args.members=2",)  # fashion_resnet's two networks, each over six test-time views


@pytest.mark.parametrize(
    "experiment, exporter, overrides",
    [
        ("fashion_cnn", "dynamo", ()),
        ("cifar10_resnet18_finetune", "dynamo", ()),
        ("fashion_resnet", "dynamo", ENSEMBLE),
        ("fashion_resnet", "torchscript", ENSEMBLE),
    ],
)
def test_onnx_export_matches_pytorch(experiment, exporter, overrides, tmp_path):
    best = export_a_short_fit(experiment, tmp_path, exporter, *overrides)

    model, data_class = model_from_checkpoint(str(best))
    if overrides:  # the ensemble comes back from the checkpoint alone, both networks
        assert len(model.net.members) == 2
    images = torch.rand(7, data_class.channels, *data_class.size)  # another batch size than the export's
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "experiment, exporter", [("char_lstm", "dynamo"), ("char_gpt", "dynamo"), ("char_lstm", "torchscript")]
)
def test_character_model_exports_with_dynamic_batch_and_length(experiment, exporter, tmp_path):
    best = export_a_short_fit(experiment, tmp_path, exporter)

    model, _ = model_from_checkpoint(str(best))
    ids = torch.randint(0, model.hparams.vocab_size, (3, 29))  # the export saw (2, 16)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"ids": ids.numpy()})
    with torch.no_grad():
        expected = model(ids)[0].numpy()
    assert logits.shape == expected.shape == (3, 29, model.hparams.vocab_size)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_the_torchscript_exporter_stays_as_a_fallback_and_unexportable_models_say_so(tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    cli("fit", "--config", config("fashion_fcn"), *tiny("fashion_fcn"), "--trainer.limit_train_batches=2", *short)
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    args = ("--ckpt_path", best, "--output", tmp_path / "old.onnx", "--exporter", "torchscript")
    result = run_litlab(*args, program="litlab-export")
    assert result.returncode == 0 and "exported" in result.stdout, result.stderr[-3000:]
    cli("fit", "--config", config("xor_mlp"), *tiny("xor_mlp"), *short)
    xor = next(tmp_path.glob("runs/xor_mlp/**/best.ckpt"))
    result = run_litlab("--ckpt_path", xor, program="litlab-export")
    assert result.returncode == 2 and "XorMLP has no ONNX export" in result.stderr.strip().splitlines()[-1]
