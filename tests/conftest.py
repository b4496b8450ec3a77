"""What the tests share: every test runs in its own temporary directory, with no network and no W&B account, and finds
the tiny datasets (written once per test process in the real on-disk formats) under `fixtures/` there.

Tests are parametrized over `configs/*.yaml`; `tiny(experiment)` composes what makes an experiment's runs take seconds
(`configs/tiny/<family>.yaml`, then `configs/tiny/<experiment>.yaml` where there is one), so a new experiment config is
covered as soon as its family has a tiny config.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning  # noqa: F401
import pytest
import torch
import wandb  # noqa: F401
import yaml
from audio_fixtures import write_fsdd, write_librispeech
from image_fixtures import write_cifar10, write_fashion_mnist, write_predict_images
from text_fixtures import FACTS, review, write_aclimdb, write_book, write_instructions, write_tiny_gpt2, write_tiny_hf

from datamodules.synthetic_fruit import write_dataset

# Lightning gives its loggers a handler on the stderr of the moment it is imported, and wandb patches stdout and stderr
# when it is: imported here, at collection, they hold pytest's own streams, not one a test's capfd closes at its end.

# No test reaches the Hugging Face hub: set before transformers or huggingface_hub is imported (they read it once).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"

LITLAB = str(Path(sys.executable).with_name("litlab"))
ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# Datasets in their real formats, written once per test process (see `fixture_data`), outside the repository; each
# test's working directory links to them as fixtures/ (`workdir`).
FIXTURES = Path(tempfile.gettempdir()) / f"litlab-fixtures-{os.getpid()}"
QUIET = ("--trainer.logger=false", "--trainer.enable_progress_bar=false")


def config(name: str) -> str:
    return str(CONFIG_DIR / f"{name}.yaml")


def family(experiment: str) -> str:
    """An experiment's data family: its DataModule's module (`datamodules.fashion_mnist.X` -> fashion_mnist)."""
    data = yaml.safe_load(Path(config(experiment)).read_text())["data"]["class_path"]
    return data.rsplit(".", 2)[-2]


def tiny(experiment: str) -> list[str]:
    """The `--config` flags that make an experiment's runs tiny (`configs/tiny/`)."""
    names = [f"tiny/{family(experiment)}", f"tiny/{experiment}"]
    return [arg for name in names if Path(config(name)).is_file() for arg in ("--config", config(name))]


def built(model):
    """A model constructed outside a Trainer, with the layers the data sizes built (its sizes given)."""
    model.configure_model()
    return model


def workdir(folder: Path) -> Path:
    """A working directory for litlab with the fixtures at hand (`fixtures/`, which `configs/tiny/` reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "fixtures").exists():
        (folder / "fixtures").symlink_to(FIXTURES, target_is_directory=True)
    return folder


def cli(*args: str, run: bool = True):
    """Run `litlab <subcommand> <args>` in this process and return its LightningCLI (trainer, model, metrics); with
    `run=False`, only build them."""
    from litlab.cli import launch, prepare

    subcommand, *rest = map(str, args)
    return launch(subcommand, rest) if run else prepare(subcommand, rest)


def debug_fit(experiment: str, *args: str):
    """One batch per stage of an experiment on its tiny data (the debug preset), without a logger."""
    return cli(
        "fit", "--config", config(experiment), *tiny(experiment), "--config", config("trainer/debug"),
        "--trainer.logger=false", *args,
    )  # fmt: skip


def run_litlab(
    *args: str,
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: int = 300,
    program: str = "litlab",
):
    """Run an installed console script (`litlab`, `litlab-export`) as a user would, stdin closed; `env` values of
    None unset."""
    environment = {**os.environ, **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    if cwd is not None:
        workdir(Path(cwd))
    return subprocess.run(
        [str(Path(LITLAB).with_name(program)), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )


def checkpoints(root: Path) -> tuple[Path, Path]:
    """(best.ckpt, last.ckpt) of the only run under root."""
    best, last = sorted(root.glob("runs/**/best.ckpt")), sorted(root.glob("runs/**/last.ckpt"))
    assert len(best) == 1 and len(last) == 1, (best, last)
    return best[0], last[0]


@pytest.fixture(scope="session", autouse=True)
def fixture_data():
    write_fashion_mnist(FIXTURES / "fashion")
    write_cifar10(FIXTURES / "cifar10")
    write_book(FIXTURES / "book.txt")
    write_predict_images(FIXTURES)
    write_aclimdb(FIXTURES / "imdb")
    write_dataset(FIXTURES / "fruit", train=14, test=4)
    write_fsdd(FIXTURES / "fsdd")
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        write_librispeech(FIXTURES / "librispeech", split)
    texts = [review(random.Random(i), i % 2 == 0) for i in range(200)]
    write_tiny_hf(FIXTURES / "tiny-distilbert", "distilbert", texts)
    write_tiny_hf(FIXTURES / "tiny-bert", "bert", texts)
    write_tiny_hf(FIXTURES / "tiny-bart", "bart", (FIXTURES / "book.txt").read_text().split(". "))
    instructions = write_instructions(FIXTURES / "instructions")
    pairs = [line for split in ("train", "val") for line in (instructions / f"{split}.jsonl").read_text().splitlines()]
    write_tiny_gpt2(FIXTURES / "tiny-gpt2", pairs + [q + " " + r for q, r in FACTS])
    yield FIXTURES
    shutil.rmtree(FIXTURES, ignore_errors=True)


@pytest.fixture
def lightning_logs(caplog):
    """caplog with Lightning's records (`rank_zero_info`): Lightning's loggers do not propagate to the root logger when
    they were imported before it had a handler."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    loggers = [logger for logger in loggers if not logger.propagate]  # those that do reach caplog already
    for logger in loggers:
        logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO):
        yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test in a fresh directory (runs/ lands there) with the fixtures at hand, W&B offline-only and without
    credentials."""
    monkeypatch.chdir(workdir(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else torch.get_num_threads())
    return tmp_path


def fails_in_one_line(capfd, *args: str, naming: str) -> str:
    """Run litlab in this process and check it failed with one readable line naming `naming`; return the line."""
    from litlab.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code not in (0, None)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("litlab: error:") and naming in last and len(last) < 500, err
    return last
