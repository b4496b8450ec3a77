"""Weights & Biases (offline here: no test touches the network) and the other logger choices.

W&B keeps process-wide state, so its runs are launched as separate `litlab` processes, as users launch them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from conftest import cli, config, run_litlab, tiny
from PIL import Image
from wandb.proto import wandb_internal_pb2

from litlab.checkpoints import weights_only_copy

XOR_TINY = tiny("xor_mlp")
QUIET = ["--trainer.enable_progress_bar=false"]


def wandb_records(run_dir: Path) -> list:
    """The records of an offline run's `run-<id>.wandb` file (LevelDB log blocks of protobuf records)."""
    data = next(run_dir.glob("*.wandb")).read_bytes()
    records, position, block, pending = [], 7, 32768, b""  # 7-byte file header
    while position + 7 <= len(data):
        if block - position % block < 7:  # block trailer
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full record, or last fragment
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def logged_keys(*runs: Path) -> set[str]:
    """The history keys (metrics, tables, images) the offline runs logged."""
    return {
        item.key or "/".join(item.nested_key)
        for run in runs
        for r in wandb_records(run)
        if r.HasField("history")
        for item in r.history.item
    }


def offline_runs(root: Path) -> list[Path]:
    """The offline W&B runs under root/runs, oldest first."""
    return sorted(root.glob("runs/*/*/wandb/offline-run-*"), key=lambda run: run.name.split("-")[2])


def run_id(offline_run: Path) -> str:
    return offline_run.name.split("-", 3)[3]  # offline-run-<time>-<id>


def fit(*args: str, **kwargs):
    result = run_litlab("fit", *args, "--trainer.enable_progress_bar=false", **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_offline_run_has_config_metrics_and_checkpoints(tmp_path):
    secret = "--trainer.logger.init_args.checkpoint_name=s3://bob:hunter2@bucket/models"  # a credential in a flag
    fit("--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1", secret)
    (run,) = offline_runs(tmp_path)
    records = wandb_records(run)
    config_items = {
        item.key: json.loads(item.value_json) for r in records if r.HasField("config") for item in r.config.update
    }
    assert config_items["model"]["class_path"] == "lightning_modules.xor.XorMLP"  # nested, not flattened
    assert config_items["data"]["init_args"]["train_size"] == 2048
    assert config_items["trainer"]["max_epochs"] == 2
    history = [item for r in records if r.HasField("history") for item in r.history.item]
    logged = {item.key or "/".join(item.nested_key) for item in history}
    assert {"train/loss", "val/acc", "val/loss"} <= logged
    assert any(r.HasField("artifact") and r.artifact.type == "model" for r in records)
    # one directory, named for the experiment and the run's start, holds its config, checkpoints and W&B files
    folder = tmp_path / "runs/xor_mlp" / run_id(run)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d{4}-[0-9a-f]{6}", run_id(run)) and run.parent.parent == folder
    assert (folder / "config.yaml").is_file() and (folder / "checkpoints/best.ckpt").is_file()
    (settings,) = [r.run for r in records if r.HasField("run")][:1]
    assert settings.run_group == "xor_mlp" and set(settings.tags) == {"xor_mlp", "xor"} and settings.job_type == "fit"
    assert settings.display_name.startswith("xor_mlp 20")
    summary = {item.key: item.value_json for r in records if r.HasField("summary") for item in r.summary.update}
    assert float(summary["best/val/acc"]) > 0.9  # the run's best validation value, in its summary
    # the credential is masked in config.yaml, the checkpoints and everything W&B keeps (its config, the command line)
    written = [path for path in folder.rglob("*") if path.is_file()]
    assert not [path for path in written if b"hunter2" in path.read_bytes()]
    assert "s3://bob:***@bucket/models" in (folder / "config.yaml").read_text()


def test_no_api_key_goes_offline_without_prompt(tmp_path):
    """No key, no WANDB_MODE, no terminal: a one-line notice, an offline run, exit 0; from another directory."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = fit(
        "--config",
        config("xor_mlp"),
        *XOR_TINY,
        "--trainer.max_epochs=1",
        env={"WANDB_MODE": None, "WANDB_SILENT": None},
        cwd=workdir,
    )
    notices = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("W&B: no API key")]
    assert len(notices) == 1 and "wandb sync" in notices[0]
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # wandb colours its prefix
    assert not [line for line in output.splitlines() if line.startswith("wandb:")], output  # nothing else about W&B
    assert "does not exist" not in result.stderr  # wandb looks for git from the run directory: it must be there
    assert len(offline_runs(workdir)) == 1


def test_resume_reattaches_to_the_same_wandb_run(tmp_path):
    fit("--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=1")
    (first,) = offline_runs(tmp_path)
    last = first.parents[1] / "checkpoints/last.ckpt"
    fit("--ckpt_path", last, "--trainer.max_epochs=2")
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 8  # written by the resumed run, same place
    assert [run_id(run) for run in offline_runs(tmp_path)] == [run_id(first), run_id(first)]


def test_test_from_a_checkpoint_joins_its_run_and_predict_writes_inside_it(tmp_path):
    fit("--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=1")
    (fitted,) = offline_runs(tmp_path)
    folder = fitted.parents[1]
    tested = run_litlab("test", "--ckpt_path", folder / "checkpoints/best.ckpt", *QUIET)
    assert tested.returncode == 0, tested.stderr[-3000:]
    runs = offline_runs(tmp_path)
    assert [run_id(run) for run in runs] == [run_id(fitted)] * 2 and {run.parents[1] for run in runs} == {folder}
    (test_settings,) = [r.run for r in wandb_records(runs[1]) if r.HasField("run")][:1]
    assert test_settings.job_type == "test" and test_settings.run_group == "xor_mlp"
    assert "test/acc" in logged_keys(runs[1])
    predicted = run_litlab("predict", "--ckpt_path", folder / "checkpoints/best.ckpt", "--data.predict_points=[[0, 1]]")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(list(folder.glob("predict-*/predictions.jsonl"))) == 1


def test_weights_only_artifacts_are_smaller_and_test_like_the_whole_checkpoint(tmp_path):
    fit("--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=2", "--config", config("logger/wandb_weights"))
    (run,) = offline_runs(tmp_path)
    best = run.parents[1] / "checkpoints/best.ckpt"
    artifacts = [r.artifact for r in wandb_records(run) if r.HasField("artifact")]
    assert sorted(alias for a in artifacts for alias in a.aliases if alias != "latest") == ["best", "last"]
    for artifact in artifacts:
        assert artifact.type == "model" and json.loads(artifact.metadata)["weights_only"]
        (entry,) = artifact.manifest.contents
        assert entry.path == "model.ckpt" and 0 < entry.size < best.stat().st_size / 2  # no AdamW moments, no loops

    light = weights_only_copy(best, tmp_path / "light.ckpt")
    assert "optimizer_states" in torch.load(best, weights_only=True)
    assert "optimizer_states" not in torch.load(light, weights_only=True)
    scores = [
        cli("test", "--ckpt_path", path, "--trainer.logger=false", *QUIET).trainer.callback_metrics
        for path in (best, light)
    ]
    assert scores[0]["test/acc"] == scores[1]["test/acc"] > 0.9


def test_logger_false_and_csv_logger(tmp_path):
    cli("fit", "--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=1", "--trainer.logger=false", *QUIET)
    assert not offline_runs(tmp_path) and len(list(tmp_path.glob("runs/xor_mlp/*/checkpoints/last.ckpt"))) == 1
    cli("fit", "--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=1", "--trainer.logger=CSVLogger", *QUIET)
    (metrics,) = tmp_path.glob("runs/xor_mlp/*/metrics.csv")  # CSV and TensorBoard: the same run folder as W&B
    assert "val/acc" in metrics.read_text().splitlines()[0]
    assert (metrics.parent / "checkpoints/best.ckpt").is_file() and (metrics.parent / "config.yaml").is_file()
    assert not offline_runs(tmp_path)


def test_default_root_dir_places_the_run_whichever_logger(tmp_path):
    """`--trainer.default_root_dir` decides where runs land, with W&B (the default logger) as without one or with
    another; the logger writes into the run folder, whatever save_dir it was given."""
    base = ["--config", config("xor_mlp"), *XOR_TINY, "--trainer.max_epochs=1"]
    fit(*base, "--trainer.default_root_dir=scratch/w")
    assert len(list(tmp_path.glob("scratch/w/xor_mlp/*/wandb/offline-run-*"))) == 1
    for root, logger in (("scratch/n", "--trainer.logger=false"), ("scratch/c", "--trainer.logger=CSVLogger")):
        cli("fit", *base, f"--trainer.default_root_dir={root}", logger, *QUIET)
        assert len(list(tmp_path.glob(f"{root}/xor_mlp/*/checkpoints/best.ckpt"))) == 1
    cli("fit", *base, "--trainer.default_root_dir=scratch/c", "--trainer.logger=CSVLogger",
        "--trainer.logger.save_dir=elsewhere", *QUIET)  # fmt: skip
    assert len(list(tmp_path.glob("scratch/c/xor_mlp/*/metrics.csv"))) == 2 and not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "runs").exists()


def test_image_classifier_logs_examples_and_confusion_matrix(tmp_path):
    small = tiny("fashion_cnn")
    fit("--config", config("fashion_fcn"), *small, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    best = next(tmp_path.glob("runs/fashion_fcn/*/checkpoints/best.ckpt"))
    tested = run_litlab("test", "--ckpt_path", best, *small, *QUIET)
    assert tested.returncode == 0, tested.stderr[-3000:]
    first, second = offline_runs(tmp_path)
    logged = logged_keys(first, second)
    assert any(key.startswith("val/examples/") for key in logged), logged
    assert any(key.startswith("test/confusion") for key in logged), logged
    images = list(first.glob("files/media/images/val/examples_*.png"))
    assert len(images) == 20  # the grid of validation images, titled in their captions


def test_char_model_logs_samples_and_embedding_projection(tmp_path):
    small = tiny("char_lstm")
    fit("--config", config("char_lstm"), *small, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    (run,) = offline_runs(tmp_path)
    logged = logged_keys(run)
    assert any(key.startswith("val/samples") for key in logged), logged
    assert any(key.startswith("embeddings/pca") for key in logged), logged


def test_review_classifier_logs_confusion_and_confident_errors(tmp_path):
    small = tiny("imdb_self_attention")
    fit("--config", config("imdb_self_attention"), *small, "--trainer.max_epochs=1")
    best = next(tmp_path.glob("runs/imdb_self_attention/*/checkpoints/best.ckpt"))
    tested = run_litlab("test", "--ckpt_path", best, *small, *QUIET)
    assert tested.returncode == 0, tested.stderr[-3000:]
    _, second = offline_runs(tmp_path)
    logged = logged_keys(second)
    assert any(key.startswith("test/confusion") for key in logged), logged
    assert any(key.startswith("test/confident_errors") for key in logged), logged
    (table,) = second.glob("files/media/table/test/confident_errors_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert rows and all(row[1] != row[2] for row in rows)  # predicted differs from true in every row
    assert [row[0] for row in rows] == sorted((row[0] for row in rows), reverse=True)


def test_detector_logs_box_overlays_and_spell_checker_logs_examples(tmp_path):
    for experiment in ("fruit_fast_rcnn", "spell_bart_tiny"):
        fit(
            "--config",
            config(experiment),
            *tiny(experiment),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.check_val_every_n_epoch=1",
        )
    detector, speller = offline_runs(tmp_path)
    assert any(key.startswith("val/detections") for key in logged_keys(detector)), logged_keys(detector)
    assert any(key.startswith("val/examples") for key in logged_keys(speller)), logged_keys(speller)
    overlays = [
        item.value_json
        for r in wandb_records(detector)
        if r.HasField("history")
        for item in r.history.item
        if (item.key or "/".join(item.nested_key)).startswith("val/detections")
    ]
    assert any("boxes2D" in value and "predictions" in value and "ground_truth" in value for value in overlays)


def test_figures_are_written_into_the_run_folder_without_wandb(tmp_path):
    small = tiny("fashion_cnn")
    off = ("--trainer.logger=false", *QUIET)
    short = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=2")
    cli("fit", "--config", config("fashion_fcn"), *small, *short, *off)
    (folder,) = tmp_path.glob("runs/fashion_fcn/*")
    cli("test", "--ckpt_path", folder / "checkpoints/best.ckpt", *small, *off)
    for name in ("learning_curves.png", "val_examples.png", "test-best/test_confusion.png"):
        with Image.open(folder / "figures" / name) as picture:  # a real PNG, small enough for a README
            assert picture.format == "PNG" and 200 < picture.width < 2000
    assert not offline_runs(tmp_path)

    small = tiny("char_lstm")
    short = ("--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    cli("fit", "--config", config("char_gru"), *small, *short, *off)
    (samples,) = tmp_path.glob("runs/char_gru/*/figures/val_samples.txt")
    assert "== val/samples, epoch 0" in samples.read_text() and samples.read_text().count("temperature: ") >= 2


def test_without_matplotlib_tables_are_still_written_and_one_line_says_so(tmp_path, monkeypatch, lightning_logs):
    import litlab.figures

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(litlab.figures, "_warned", False)
    small = tiny("char_lstm")
    cli("fit", "--config", config("char_gru"), *small, "--trainer.max_epochs=1", "--trainer.logger=false", *QUIET)
    (folder,) = tmp_path.glob("runs/char_gru/*")
    assert (folder / "figures/val_samples.txt").is_file() and not list(folder.glob("figures/*.png"))
    notices = [r.getMessage() for r in lightning_logs.records if "matplotlib is not installed" in r.getMessage()]
    assert len(notices) == 1 and "litlab[plots]" in notices[0]


def test_credentials_are_masked_by_name_and_in_urls_but_tokenizer_settings_are_not():
    from litlab.masking import mask, mask_text

    config = {"logger": {"api_key": "k", "token": "t", "tracking_uri": "postgresql://u:pw@db/x"}, "pad_token": "<p>"}
    assert mask(config) == {
        "logger": {"api_key": "***", "token": "***", "tracking_uri": "postgresql://u:***@db/x"},
        "pad_token": "<p>",
    }
    line = "--storage=mysql://u:pw@h/db --data.tokenizer=bert WANDB_API_KEY=abc https://h/p?access_token=z&x=1"
    assert (
        mask_text(line)
        == "--storage=mysql://u:***@h/db --data.tokenizer=bert WANDB_API_KEY=*** https://h/p?access_token=***&x=1"
    )
