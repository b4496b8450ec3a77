"""Every experiment config: prints a config that parses back, runs a debug fit, trains, tests and predicts."""

from __future__ import annotations

import json
import pydoc
from pathlib import Path

import pytest
import torch
import yaml
from conftest import EXPERIMENTS, checkpoints, cli, config, debug_fit, tiny


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_print_config_parses_back(experiment, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("fit", "--config", config(experiment), "--print_config")
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "trainer:" in printed
    assert f"\nexperiment: {experiment}\n" in printed  # named for its config file
    # the optimizer and its schedule, once each, as LightningCLI users know them
    assert printed.count("\n    optimizer:\n      class_path: torch.optim.") == 1
    assert printed.count("\n    lr_scheduler:") == 1
    (tmp_path / "printed.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        cli("fit", "--config", tmp_path / "printed.yaml", "--print_config")
    assert capsys.readouterr().out == printed


def test_any_torch_optimizer_from_the_command_line(capsys):
    with pytest.raises(SystemExit):
        cli("fit", "--config", config("fashion_cnn"), "--model.optimizer=SGD", "--model.optimizer.lr=0.05",
            "--model.optimizer.momentum=0.9", "--model.lr_scheduler=null", "--print_config")  # fmt: skip
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert model["optimizer"]["class_path"] == "torch.optim.SGD" and model["lr_scheduler"] is None
    assert model["optimizer"]["init_args"]["lr"] == 0.05 and model["optimizer"]["init_args"]["momentum"] == 0.9


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_preset_runs_one_batch_per_stage(experiment):
    run = debug_fit(experiment)
    assert run.trainer.fast_dev_run and run.trainer.global_step == 1
    assert "val/loss" in run.trainer.callback_metrics


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fit_then_test_and_predict_from_checkpoint(experiment, tmp_path, capsys):
    run = cli(
        "fit",
        "--config",
        config(experiment),
        *tiny(experiment),
        "--trainer.logger=false",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1",
    )
    best, last = checkpoints(tmp_path)
    assert capsys.readouterr().out.strip().endswith(f"best checkpoint: {best.relative_to(tmp_path)}")
    # sizes the data decided: recorded in the checkpoint, never written into the live hyperparameters
    recorded = torch.load(best, weights_only=True)["hyper_parameters"]
    for name in run.model.data_arguments:
        assert run.model.hparams[name] is None and recorded[name] == getattr(run.datamodule, name), name

    # no model arguments: the checkpoint's own config is used
    small = tiny(experiment)
    tested = cli("test", "--ckpt_path", best, *small, "--trainer.logger=false", "--trainer.limit_test_batches=2")
    metrics = tested.trainer.callback_metrics
    assert "test/loss" in metrics and tested.model.monitor.replace("val/", "test/") in metrics

    cli("predict", "--ckpt_path", last, *tiny(experiment))  # the tiny configs name what to predict
    lines = capsys.readouterr().out.strip().splitlines()
    written = [line for line in lines if line.startswith("predictions written to ")]
    assert len(written) == 1
    path = tmp_path / written[0].removeprefix("predictions written to ")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 and all({"input", "output"} <= record.keys() for record in records)
    printed = "".join("".join(lines).split())  # whitespace aside (an untrained generator may emit any)
    line = type(tested.model).prediction_format  # the experiment's printed line per input
    assert all("".join(line.format(**record).split()) in printed for record in records)


def stated_twice(config_file: Path) -> set[str]:
    """The settings a config states in both its model and its data section, and the model arguments it states that
    the data decides (its model's `data_arguments`)."""
    raw = yaml.safe_load(config_file.read_text())
    model, data = (raw.get(key, {}).get("init_args") or {} for key in ("model", "data"))
    decided = pydoc.locate(raw["model"]["class_path"]).data_arguments
    return (set(model) & set(data)) | (set(model) & set(decided))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_value_is_stated_once(experiment):
    """What both the model and the data need (a window length, an image size, a class count) is the data's; the
    model reads it (`Experiment.data_arguments`), so a config cannot give the two different values."""
    assert not stated_twice(Path(config(experiment)))


def test_the_check_sees_a_value_stated_twice(tmp_path):
    text = Path(config("char_gpt")).read_text().replace("    arch: gpt\n", "    arch: gpt\n    context_len: 256\n")
    (tmp_path / "twice.yaml").write_text(text)
    assert stated_twice(tmp_path / "twice.yaml") == {"context_len"}
