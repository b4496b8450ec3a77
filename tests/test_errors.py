"""Bad input gets one readable line and a non-zero exit, never a traceback, and nothing already written is lost."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import checkpoints, cli, config, fails_in_one_line, run_litlab, tiny

XOR_TINY = tiny("xor_mlp")
ADDER_TINY = tiny("adder_transformer")


@pytest.fixture
def xor_checkpoint(tmp_path):
    cli(
        "fit",
        "--config",
        config("xor_mlp"),
        *XOR_TINY,
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    return checkpoints(tmp_path)


@pytest.fixture
def adder_checkpoint(tmp_path):
    cli(
        "fit",
        "--config",
        config("adder_transformer"),
        *ADDER_TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    return checkpoints(tmp_path)[0]


def test_unknown_config_key(capfd):
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), "--trainer.max_epochz=3", naming="max_epochz")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.hiden=[8]"], "--model.hiden: XorMLP takes no argument 'hiden'; did you mean 'hidden'?"),
        (["--model.optimizer.lrr=0.1"], "--model.optimizer.lrr: AdamW takes no argument 'lrr'; did you mean 'lr'?"),
        (["--data.batchsize=8"], "--data.batchsize: XorData takes no argument 'batchsize'; did you mean 'batch_size'?"),
        (  # a union of a list and a single callback: the class the argument was given to, not the union's last
            ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitr=val/acc"],
            "--trainer.callbacks.monitr: EarlyStopping takes no argument 'monitr'; did you mean 'monitor'?",
        ),
        (["--model.lr=0.1"], "--model.lr: XorMLP takes no argument 'lr' ("),  # nothing close: no suggestion
    ],
)
def test_unknown_argument_names_its_class_and_the_closest_name(capfd, args, expected):
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), *args, "--trainer.logger=false", naming=expected)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--model=XorData", "--model=XorData: no Experiment class by that name or import path"),  # a DataModule
        ("--data=Foo", "--data=Foo: no LightningDataModule class by that name or import path"),
        ("--trainer.callbacks+=EarlyStoping", "--trainer.callbacks=EarlyStoping: no Callback class by that name"),
        ("--model.optimizer=torch.optim.Adamm", "--model.optimizer=torch.optim.Adamm: no class by that name"),
    ],
)
def test_class_that_does_not_exist_is_named_with_the_kind_wanted(capfd, arg, expected):
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), arg, "--trainer.logger=false", naming=expected)


def test_missing_config_file(capfd):
    fails_in_one_line(capfd, "fit", "--config", "configs/nope.yaml", naming="nope.yaml")


def test_config_file_that_is_not_utf8(capfd, tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("model:\n  class_path: lightning_modules.xor.XorMLP  # café\n".encode("latin-1"))
    fails_in_one_line(capfd, "fit", "--config", latin1, naming="is not UTF-8 text (byte 0xe9")


def test_run_folder_under_a_file(capfd, tmp_path):
    (tmp_path / "a_file").write_text("")
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), "--trainer.logger=false",
                      f"--trainer.default_root_dir={tmp_path / 'a_file'}", naming="a_file is a file")  # fmt: skip


def test_run_folder_in_an_unwritable_folder(capfd, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: every folder is writable")
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), "--trainer.logger=false",
                      f"--trainer.default_root_dir={locked}", naming="is not writable")  # fmt: skip


def test_negative_epochs(capfd):
    fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("xor_mlp"),
        "--trainer.max_epochs=-5",
        "--trainer.logger=false",
        naming="max_epochs",
    )


@pytest.mark.parametrize(
    ("experiment", "arg", "expected"),
    [
        ("xor_mlp", "--data.init_args.batch_size=0", "--data.batch_size=0: must be > 0"),
        ("xor_mlp", "--model.lr_scheduler.warmup_fraction=2", "--model.lr_scheduler.warmup_fraction=2: must be in"),
        ("xor_mlp", "--data.num_workers=-1", "--data.num_workers=-1: must be >= 0"),
        ("fashion_cnn", "--model.init_args.net.init_args.dropout=1.5", "--model.net.dropout=1.5: must be in [0, 1]"),
        ("char_lstm_cpu", "--data.train_fraction=1", "--data.train_fraction=1: must be in (0, 1)"),
    ],
)
def test_number_outside_its_domain_is_refused_where_parsed(capfd, experiment, arg, expected):
    fails_in_one_line(capfd, "fit", "--config", config(experiment), arg, "--trainer.logger=false", naming=expected)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--trainer.max_epochs=abc", "--trainer.max_epochs=abc: expected int or None"),
        ("--trainer.max_epochs=None", "--trainer.max_epochs=None: expected int or None; write None as null"),
        ("--model.lr_scheduler=None", "--model.lr_scheduler=None: no class by that name or import path; write None as"),
        ("--model.optimizer.lr=abc", "--model.optimizer.lr=abc: expected float or Tensor"),
        ("--trainer.precision=fp8", "--trainer.precision=fp8: expected one of [64, 32, 16], one of ['transformer-en"),
        # a union whose first type refused the value for its shape: every accepted type, not only None
        (
            "--data.predict_points=[[1,2,3]]",
            "--data.predict_points=[[1, 2, 3]]: expected tuple[tuple[float, float], ...] or None",
        ),
        # a class's argument of one type, plain and constrained
        ("--model.activation=foo", "--model.activation=foo: expected one of ['relu', 'gelu', 'tanh', 'sigmoid']"),
        (
            "--data.batch_size=x",
            "--data.batch_size: expected PositiveInt (invalid literal for int() with base 10: 'x')",
        ),
    ],
)
def test_value_of_the_wrong_type_names_the_key_the_value_and_the_types(capfd, arg, expected):
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), arg, "--trainer.logger=false", naming=expected)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--trainer.accelerator=gpu3", "--trainer: You selected an invalid accelerator name: `accelerator='gpu3'`"),
        ("--trainer.strategy=dpp", "--trainer: You selected an invalid strategy name: `strategy='dpp'`"),
    ],
)
def test_trainer_setting_lightning_refuses_is_one_line(capfd, arg, expected):
    fails_in_one_line(capfd, "fit", "--config", config("xor_mlp"), arg, "--trainer.logger=false", naming=expected)


@pytest.mark.parametrize(
    ("experiment", "args", "expected"),
    [
        ("fruit_fast_rcnn_scratch", ["--model.init_args.feature_stage=layer9"], "'layer9': one of layer1..layer4"),
        (
            "imdb_bilstm",
            ["--model.init_args.glove_path=glove.txt", "--model.init_args.embeddings_from=bert-base-uncased"],
            "glove_path or --model.init_args.embeddings_from, not both",
        ),
        ("fashion_cnn", ["--data.init_args.translate=28"], "--data.translate=28: shifts must stay below"),
        ("fashion_cnn", ["--data.init_args.zoom=[-1.1, -0.9]"], "--data.zoom=[-1.1, -0.9]: give [low, high] with 0 <"),
        ("cifar10_resnet18_scratch", ["--data.init_args.contrast=[1.2, 0.8]"], "--data.contrast=[1.2, 0.8]: give"),
    ],
)
def test_a_model_refusing_its_arguments_is_one_line(capfd, experiment, args, expected):
    fails_in_one_line(capfd, "fit", "--config", config(experiment), *args, "--trainer.logger=false", naming=expected)


def test_optimizer_refusing_its_arguments_is_one_line(capfd):
    args = ("fit", "--config", config("xor_mlp"), *XOR_TINY, "--model.optimizer.lr=-0.1", "--trainer.logger=false")
    fails_in_one_line(capfd, *args, naming="--model.optimizer: Invalid learning rate: -0.1")


def test_flags_win_over_the_checkpoints_own_config(xor_checkpoint):
    quiet = ("--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.limit_test_batches=1")
    tested = cli("test", "--ckpt_path", xor_checkpoint[0], *XOR_TINY, "--model.init_args.loss=mse", *quiet)
    assert tested.model.hparams.loss == "mse" and tested.model.hparams.hidden == [64, 64]  # the rest: the checkpoint's


def test_checkpoint_hyperparameters_are_builtins(xor_checkpoint):
    # the parsed config holds jsonargparse's PositiveInt etc.; the model and data must receive plain numbers, or
    # `weights_only` loading would refuse the checkpoint
    checkpoint = torch.load(xor_checkpoint[0], weights_only=True)
    values = [*checkpoint["hyper_parameters"].values(), *checkpoint["datamodule_hyper_parameters"].values()]
    assert {type(v).__module__ for v in values if isinstance(v, (int, float))} == {"builtins"}


def test_missing_checkpoint(capfd):
    fails_in_one_line(
        capfd, "test", "--config", config("xor_mlp"), "--ckpt_path", "runs/nope.ckpt", naming="runs/nope.ckpt"
    )


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"PK\x03\x04 truncated zip"])
def test_file_that_is_not_a_checkpoint(capfd, tmp_path, content):
    (tmp_path / "bad.ckpt").write_bytes(content)
    line = fails_in_one_line(capfd, "test", "--config", config("xor_mlp"), "--ckpt_path", "bad.ckpt", naming="bad.ckpt")
    assert "not a checkpoint" in line and "mmap" not in line


class Payload:
    """Stands for any object a checkpoint could smuggle in: only tensors and plain data load."""


def test_pickled_object_is_refused(capfd, tmp_path):
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    fails_in_one_line(capfd, "predict", "--ckpt_path", "evil.ckpt", naming="loads safely")


def test_foreign_checkpoint_without_config(capfd, tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "plain.ckpt")
    fails_in_one_line(capfd, "test", "--ckpt_path", "plain.ckpt", naming="add --config")


def test_checkpoint_of_another_experiment(capfd, xor_checkpoint):
    best, last = xor_checkpoint
    before = last.read_bytes()
    fails_in_one_line(
        capfd, "fit", "--config", config("adder_lstm"), "--ckpt_path", last, "--trainer.logger=false", naming="XorMLP"
    )
    fails_in_one_line(
        capfd, "test", "--config", config("adder_transformer"), "--ckpt_path", best, naming="adder.AdderTransformer"
    )
    assert last.read_bytes() == before  # the refused resume wrote nothing over it


def test_checkpoint_of_another_experiment_named_in_a_config_file(capfd, tmp_path, xor_checkpoint):
    last = xor_checkpoint[1]
    before = last.read_bytes()
    (tmp_path / "resume.yaml").write_text(f"ckpt_path: {last}\n")
    args = ("fit", "--config", config("adder_lstm"), "--config", tmp_path / "resume.yaml", "--trainer.logger=false")
    fails_in_one_line(capfd, *args, naming="XorMLP")
    assert last.read_bytes() == before


@pytest.mark.parametrize(
    ("bad", "naming"),
    [("12a+3", "'12a+3'"), ("123+4", "'123+4'"), ("", "''"), ("5*3", "'5*3'")],
)
def test_bad_predict_expression(capfd, adder_checkpoint, bad, naming):
    fails_in_one_line(
        capfd, "predict", "--ckpt_path", adder_checkpoint, f'--data.predict_expressions=["1+2", "{bad}"]', naming=naming
    )


def test_empty_predict_file(capfd, tmp_path, adder_checkpoint):
    (tmp_path / "empty.txt").write_text("\n  \n")
    fails_in_one_line(
        capfd, "predict", "--ckpt_path", adder_checkpoint, "--data.predict_file=empty.txt", naming="empty.txt"
    )


def test_console_script_prints_one_line(tmp_path):
    """The same through the installed `litlab` command, as a user meets it."""
    result = run_litlab("test", "--config", config("xor_mlp"), "--ckpt_path", "missing.ckpt")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["litlab: error: --ckpt_path missing.ckpt: no such file"]


def test_data_without_what_the_model_needs_is_one_line(capfd):
    """A model reads its data only through documented attributes; data that lacks one is named in one line."""
    args = ("fit", "--config", config("char_rnn_scratch"), "--data=datamodules.xor.XorData", "--trainer.logger=false")
    line = fails_in_one_line(capfd, *args, naming="vocab_size")
    assert "CharLM" in line and "XorData" in line


def test_a_logger_whose_package_is_missing_names_its_extra(capfd, monkeypatch):
    """TensorBoard is an extra: without it, `--trainer.logger=TensorBoardLogger` is one line naming the extra."""
    import lightning.fabric.loggers.tensorboard as tb

    # how Lightning decides that neither tensorboard nor tensorboardX is installed
    monkeypatch.setattr(tb, "_TENSORBOARD_AVAILABLE", False)
    monkeypatch.setattr(tb, "_TENSORBOARDX_AVAILABLE", False)
    args = ("fit", "--config", config("xor_mlp"), "--trainer.logger=TensorBoardLogger", "--trainer.max_epochs=1")
    line = fails_in_one_line(capfd, *args, naming="litlab[tensorboard]")
    assert "not installed" in line


def test_a_detector_without_opencv_names_the_detection_extra(capfd, monkeypatch, tmp_path):
    from datamodules.synthetic_fruit import write_dataset

    write_dataset(tmp_path / "fruit", train=2, test=1)
    monkeypatch.setitem(sys.modules, "cv2", None)  # what `import cv2` meets when opencv is not installed
    args = ("fit", "--config", config("fruit_fast_rcnn_scratch"), f"--data.data_dir={tmp_path / 'fruit'}")
    args += ("--data.proposals=fast", "--data.val_size=1", "--trainer.logger=false", "--trainer.max_epochs=1")
    line = fails_in_one_line(capfd, *args, naming="litlab[detection]")
    assert "`cv2` is not installed" in line


@pytest.mark.parametrize(
    ("message", "name", "extra"),
    [
        ("`MAP` metric requires that `pycocotools` or `faster-coco-eval` installed.", None, "detection"),
        ("No module named 'onnxscript'", "onnxscript", "export"),
        ("No module named 'matplotlib.pyplot'", "matplotlib.pyplot", "plots"),
    ],
)
def test_a_missing_package_names_the_extra_that_installs_it(message, name, extra):
    from litlab.errors import install_hint

    assert f"pip install 'litlab[{extra}]'" in install_hint(ModuleNotFoundError(message, name=name))


def test_a_missing_package_of_no_extra_is_named_as_it_is():
    from litlab.errors import install_hint

    line = install_hint(ModuleNotFoundError("No module named 'somewhere'", name="somewhere"))
    assert "`somewhere`" in line and "litlab[" not in line
