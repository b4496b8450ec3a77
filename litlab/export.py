"""Export a checkpoint to ONNX with torch's current (dynamo) exporter, and check it against PyTorch in onnxruntime.

    litlab-export --ckpt_path runs/<experiment>/<run>/checkpoints/best.ckpt            # -> best.onnx beside it
    litlab-export --ckpt_path <best.ckpt> --output model.onnx --opset 18
    litlab-export --ckpt_path <best.ckpt> --exporter torchscript                       # the older exporter

What exports (each experiment's `onnx_example`): the image classifiers take `image`, float (batch, C, H, W) in [0, 1]
at the dataset's size, and return `logits` (batch, classes), standardisation (and for the torchvision networks,
resizing) inside; the character models take `ids`, int64 (batch, time), and return `logits` (batch, time, vocab).
Batch and time are dynamic. Needs the `export` extra (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path

import lightning as L
import torch

from litlab import adapters
from litlab.checkpoints import load_checkpoint, recorded_class, recorded_experiment, weights_only
from litlab.errors import LitlabError, fail, fail_if_missing_package, quiet_known_noise
from litlab.experiment import Experiment, experiment_from_config


def model_from_checkpoint(ckpt_path: str) -> tuple[Experiment, type]:
    """The checkpoint's LightningModule with its weights (see `loaded_model`) and its DataModule class."""
    checkpoint, config = recorded_experiment(ckpt_path)
    return loaded_model(checkpoint, config), recorded_class(config["data"])


def loaded_model(checkpoint: dict, config: dict, data: L.LightningDataModule | None = None) -> Experiment:
    """The LightningModule of a loaded checkpoint and its recorded config, with its weights (an adapter's base
    loaded again, and the adapter merged into it: `litlab.adapters`), in eval mode; weights that do not fit the
    model are one line. `data`: the DataModule its layers read (the adder's tokenizer), where it has one."""
    model = experiment_from_config(config["model"])
    model.data_outside_trainer = data
    model.adaptation = adapters.recorded(checkpoint)
    model.configure_model()  # the layers the data sized: their sizes are recorded in the checkpoint
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:  # torch lists every missing and unexpected key
        first = str(err).strip().splitlines()[-1].strip()[:200]
        raise LitlabError(f"the checkpoint's weights do not fit {type(model).__name__}: {first}") from None
    adapters.merge_adapters(model)
    return model.eval()


def export(ckpt_path: str, output: Path, opset: int = 18, exporter: str = "dynamo") -> float:
    """Write the ONNX file; return the largest difference between its outputs and PyTorch's on example inputs of
    another batch size (and text length) than the export's."""
    model, data_class = model_from_checkpoint(ckpt_path)
    example = model.onnx_example(data_class)
    if example is None:
        raise LitlabError(f"--ckpt_path {ckpt_path}: {type(model).__name__} has no ONNX export (see litlab-export -h)")
    module, inputs, outputs = example
    module.eval()
    names = list(inputs)
    # the batch dimension is dynamic, and every dimension of token ids (batch, time)
    dims = [(0,) if t.is_floating_point() else tuple(range(t.dim())) for t in inputs.values()]
    if exporter == "dynamo":
        dynamic = [{d: torch.export.Dim.DYNAMIC for d in dims_of_one} for dims_of_one in dims]
        options = {"dynamo": True, "dynamic_shapes": tuple(dynamic)}
    else:  # the TorchScript exporter: no onnxscript needed; it names each dynamic axis, outputs' too
        axis = {0: "batch", 1: "time"}
        widest = max(dims, key=len)  # outputs: (batch, classes) from images, (batch, time, vocab) from ids
        named = [*zip(names, dims), *((name, widest) for name in outputs)]
        options = {"dynamo": False, "dynamic_axes": {name: {d: axis[d] for d in ds} for name, ds in named}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(inputs.values()), str(output), input_names=names, output_names=outputs, opset_version=opset,
            **options,
        )  # fmt: skip
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    other = dict(inputs)  # one more row than the export saw, and one more step of token ids: each dynamic dimension
    for name, dims_of_one in zip(names, dims):
        for d in dims_of_one:
            other[name] = torch.cat([other[name], other[name].narrow(d, 0, 1)], d)
    exported = session.run(outputs[:1], {name: t.numpy() for name, t in other.items()})[0]
    with torch.no_grad():
        expected = module(*other.values())
    return float((torch.from_numpy(exported) - expected).abs().max())


def merge(ckpt_path: str, output: Path | None = None) -> Path:
    """`litlab merge`: an adapted run's checkpoint as a plain full one (weights only, as `weights_only_copy`), which
    loads without peft and without the base; it records the base and the adapter it came from."""
    checkpoint = load_checkpoint(ckpt_path)
    record = checkpoint.get("adaptation") or {}
    if not record.get("lora"):
        raise LitlabError(f"--ckpt_path {ckpt_path} holds no LoRA adapter: there is nothing to merge")
    model, _ = model_from_checkpoint(ckpt_path)  # base and adapter, merged
    merged = weights_only(checkpoint)
    merged["state_dict"] = model.state_dict()
    merged["adaptation"] = {**record, "lora": None, "partial": False, "merged_from": str(Path(ckpt_path).resolve())}
    target = output or Path(ckpt_path).with_name(f"{Path(ckpt_path).stem}-merged.ckpt")
    partial_file = target.with_name(f".{target.name}.part")  # written whole, then renamed: never a half file
    torch.save(merged, partial_file)
    partial_file.replace(target)
    return target


def merge_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="litlab merge", description=merge.__doc__.split(":", 1)[1].strip())
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", type=Path, help="default: <checkpoint>-merged.ckpt beside it")
    options = parser.parse_args(args)
    target = merge(options.ckpt_path, options.output)
    print(f"merged checkpoint: {target}")


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="litlab-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", type=Path, help="default: the checkpoint's path with .onnx")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    options = parser.parse_args(args)
    quiet_known_noise()
    output = options.output or Path(options.ckpt_path).with_suffix(".onnx")
    try:
        difference = export(options.ckpt_path, output, options.opset, options.exporter)
    except LitlabError as err:
        fail(str(err))
    except ImportError as err:
        fail_if_missing_package(err)
        raise
    print(f"exported {output} (largest logit difference from PyTorch in onnxruntime: {difference:.2e})")


if __name__ == "__main__":
    main()
