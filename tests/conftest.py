"""Shared fixtures: every test runs in its own temporary directory, with no network and no W&B account.

What makes each experiment's runs tiny, what it predicts and what memorising a batch needs is in `registry.py`; every
test is parametrized over `configs/*.yaml`, so a new experiment config is covered as soon as its family is listed there.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_fixtures import write_cifar10, write_fashion_mnist, write_predict_images
from registry import FIXTURES, config, family
from text_fixtures import review, write_aclimdb, write_book, write_tiny_hf

from datamodules.synthetic_fruit import write_dataset

# No test reaches the Hugging Face hub: set before transformers or huggingface_hub is imported (they read it once).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"

LITLAB = str(Path(sys.executable).with_name("litlab"))


def cli(*args: str, run: bool = True):
    """Run litlab in this process and return the LightningCLI (for its trainer, model and metrics); with `run=False`,
    only build them (no subcommand then)."""
    from litlab.cli import LitlabCLI

    return LitlabCLI(args=[str(a) for a in args], run=run)


def debug_fit(experiment: str, *args: str):
    """One batch per stage of an experiment on its tiny data (the debug preset), without a logger."""
    tiny = family(experiment)["tiny"]
    return cli(
        "fit",
        "--config",
        config(experiment),
        *tiny,
        "--config",
        config("trainer/debug"),
        "--trainer.logger=false",
        *args,
    )


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
    texts = [review(random.Random(i), i % 2 == 0) for i in range(200)]
    write_tiny_hf(FIXTURES / "tiny-distilbert", "distilbert", texts)
    write_tiny_hf(FIXTURES / "tiny-bert", "bert", texts)
    write_tiny_hf(FIXTURES / "tiny-bart", "bart", (FIXTURES / "book.txt").read_text().split(". "))
    yield FIXTURES
    shutil.rmtree(FIXTURES, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test in a fresh directory (runs/ lands there), W&B offline-only and without credentials."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else torch.get_num_threads())
    return tmp_path


def fails_in_one_line(capfd, *args: str, naming: str) -> str:
    """Run litlab in this process and check it failed with one readable line naming `naming`; return the line."""
    from litlab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code not in (0, None)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("litlab: error:") and naming in last and len(last) < 500, err
    return last
