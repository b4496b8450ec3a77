"""The targets of the experiments whose data is generated here, on their default configs, end to end.

Slow (minutes each): `make test` skips them; run `.venv/bin/python -m pytest -m slow -n 0 -s` on a quiet machine.
Each prints its measured line for the README: metric, fit wall time (the whole `litlab fit` command), machine.
"""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import config, run_litlab

from datamodules.synthetic_fruit import write_dataset

pytestmark = pytest.mark.slow

TARGETS = {
    # experiment: (metric, at least, fit wall seconds at most)
    "xor_mlp": ("test/acc", 0.998, 20),
    "adder_lstm": ("test/exact_match", 0.995, 15 * 60),
    "adder_transformer": ("test/exact_match", 0.999, 15 * 60),
    "fruit_fast_rcnn_synthetic": ("test/map_50", 0.8, 15 * 60),
}
# data written first, in the experiment's on-disk format (relative to the test's working directory)
DATA = {"fruit_fast_rcnn_synthetic": lambda: write_dataset(Path("data/synthetic_fruit"), train=240, test=60)}


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return f"{device} ({platform.machine()})"


@pytest.mark.parametrize("experiment", sorted(TARGETS))
def test_default_config_reaches_its_target(experiment, tmp_path):
    metric, target, budget = TARGETS[experiment]
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    DATA.get(experiment, lambda: None)()
    start = time.perf_counter()
    fit = run_litlab("fit", "--config", config(experiment), *quiet, timeout=2 * budget + 120, cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert fit.returncode == 0, fit.stderr[-3000:]
    best = fit.stdout.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    tested = run_litlab("test", "--ckpt_path", best, *quiet, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    value = float(re.search(rf"{re.escape(metric)}\s*│\s*([0-9.]+)", tested.stdout).group(1))
    print(f"\n{experiment}: {metric} = {value:.4%}, fit {seconds:.0f} s wall, {machine()}")
    assert value >= target
    assert seconds <= budget
