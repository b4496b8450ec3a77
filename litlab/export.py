"""Export an image classifier checkpoint to ONNX, and check the export against PyTorch with onnxruntime.

    litlab-export --ckpt_path runs/<experiment>/<run>/checkpoints/best.ckpt            # -> best.onnx beside it
    litlab-export --ckpt_path <best.ckpt> --output model.onnx --opset 17

The ONNX model takes `image`: float (batch, C, H, W) in [0, 1] at the dataset's size (any batch size) and returns
`logits` (batch, classes); standardisation (and, for the torchvision networks, resizing) is inside it.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from litlab.checkpoints import checkpoint_config, load_checkpoint
from litlab.errors import LitlabError, fail, quiet_known_noise
from litlab.experiment import Experiment


def model_from_checkpoint(ckpt_path: str) -> tuple[Experiment, type]:
    """The checkpoint's LightningModule with its weights, in eval mode, and its DataModule class."""
    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint_config(checkpoint, "predict")
    if "model" not in config or "data" not in config:
        raise LitlabError(f"--ckpt_path {ckpt_path} does not record its model and data (not written by litlab)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Experiment, "model")
    model = parser.instantiate_classes(parser.parse_object({"model": config["model"]})).model
    model.load_state_dict(checkpoint["state_dict"])
    module, name = config["data"]["class_path"].rsplit(".", 1)
    return model.eval(), getattr(importlib.import_module(module), name)


def export(ckpt_path: str, output: Path, opset: int = 17) -> float:
    """Write the ONNX file; return the largest difference between its logits and PyTorch's on a random batch."""
    model, data_class = model_from_checkpoint(ckpt_path)
    if not hasattr(data_class, "channels"):
        raise LitlabError(
            f"--ckpt_path {ckpt_path}: ONNX export covers the image classifiers, not {data_class.__name__}"
        )
    images = torch.rand(4, data_class.channels, *data_class.size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        model,
        (images,),
        str(output),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic batch by name
    )
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (exported,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    return float((torch.from_numpy(exported) - expected).abs().max())


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="litlab-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", type=Path, help="default: the checkpoint's path with .onnx")
    parser.add_argument("--opset", type=int, default=17)
    options = parser.parse_args(args)
    quiet_known_noise()
    output = options.output or Path(options.ckpt_path).with_suffix(".onnx")
    try:
        difference = export(options.ckpt_path, output, options.opset)
    except LitlabError as err:
        fail(str(err))
    print(f"exported {output} (largest logit difference from PyTorch in onnxruntime: {difference:.2e})")


if __name__ == "__main__":
    main()
