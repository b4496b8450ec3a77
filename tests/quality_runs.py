"""What the quality suites (`test_quality.py`, `test_real_data.py`) share: a fit-then-test run as a user runs it, the
metric read from its output, and the machine it ran on, for the README line each prints."""

from __future__ import annotations

import os
import platform
import re
import shlex
import time
from pathlib import Path

import torch
from conftest import run_litlab

from litlab.hardware import cpu_vector_unit, cpuinfo


def logged(metric: str, output: str) -> float:
    return float(re.search(rf"{re.escape(metric)}\s*│\s*([0-9.]+)", output).group(1))


def machine() -> str:
    """The GPU's name, or the CPU's with its threads and widest vector unit (bf16 speed depends on it)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({platform.machine()})"
    parts = [cpuinfo("model name") or platform.processor() or "CPU", f"{torch.get_num_threads()} threads"]
    vector = cpu_vector_unit()
    return f"{', '.join(parts + ([vector] if vector else []))} ({platform.machine()})"


def extra_args() -> list[str]:
    """What `LITLAB_ARGS` appends to every fit of the quality suites."""
    return shlex.split(os.environ.get("LITLAB_ARGS", ""))


def fit_then_test(*fit_args: str, timeout: int, cwd: Path) -> tuple[float, str]:
    """`litlab fit` quietly, then `litlab test` of its best checkpoint: (the fit's wall seconds, the test's stdout)."""
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    fit = run_litlab("fit", *fit_args, *quiet, timeout=timeout, cwd=cwd)
    seconds = time.perf_counter() - start
    assert fit.returncode == 0, fit.stderr[-3000:]
    best = fit.stdout.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    tested = run_litlab("test", "--ckpt_path", best, *quiet, cwd=cwd)
    assert tested.returncode == 0, tested.stderr[-3000:]
    return seconds, tested.stdout
