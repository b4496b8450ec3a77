"""The targets of the experiments whose data is generated here, on their default configs, end to end.

Slow (minutes each): `make test` skips them; run `.venv/bin/python -m pytest -m slow -n 0 -s` on a quiet machine.
Each prints its measured line for the README: metric, fit wall time (the whole `litlab fit` command), machine.
`LITLAB_ARGS` appends arguments to every fit, e.g. `--config configs/trainer/cpu_bf16.yaml` on a CPU with AVX512-BF16
or AMX (the line then says so).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import time
from pathlib import Path

import pytest
import torch
from conftest import config, run_litlab

from datamodules.synthetic_fruit import write_dataset
from litlab.hardware import cpu_vector_unit, cpuinfo

pytestmark = pytest.mark.slow

TARGETS = {
    # experiment: (metric, at least, fit wall seconds at most)
    "xor_mlp": ("test/acc", 0.998, 20),
    "adder_lstm": ("test/exact_match", 0.995, 15 * 60),
    "adder_transformer": ("test/exact_match", 0.999, 15 * 60),
    "fruit_fast_rcnn_scratch": ("test/map_50", 0.8, 15 * 60),
    "spell_bart_tiny": ("test/exact_match", 0.0, 30 * 60),
}
# metrics that must beat a baseline logged beside them by a margin: experiment: (baseline, margin)
BEATS = {"spell_bart_tiny": ("test/copy_exact_match", 0.05)}


def offline_english() -> list[str]:
    """The English prose this offline machine has, in the order the README's spell-check run used: Debian's licence
    texts, Vim's user manual, and Python's pydoc topics (written to the working directory)."""
    licences = sorted({path.resolve() for path in Path("/usr/share/common-licenses").glob("*")})
    manual = sorted(Path("/usr/share/vim").glob("vim*/doc/usr_*.txt"))
    if not licences or not manual:
        pytest.skip("needs /usr/share/common-licenses and Vim's user manual (/usr/share/vim/vim*/doc/usr_*.txt)")
    from pydoc_data.topics import topics

    Path("pydoc_topics.txt").write_text("\n\n".join(topics.values()), encoding="utf-8")
    return [f"--data.text_files=[{','.join(map(str, [*licences, *manual, 'pydoc_topics.txt']))}]"]


def synthetic_fruit() -> list[str]:
    write_dataset(Path("data/synthetic_fruit"), train=240, test=60)
    return ["--data.data_dir=data/synthetic_fruit", "--trainer.max_epochs=15"]  # drawn fruit learn fast


# data written first, in the experiment's on-disk format (relative to the test's working directory); returns the
# arguments that point the config at it
DATA = {"fruit_fast_rcnn_scratch": synthetic_fruit, "spell_bart_tiny": offline_english}


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


@pytest.mark.parametrize("experiment", sorted(TARGETS))
def test_default_config_reaches_its_target(experiment, tmp_path):
    metric, target, budget = TARGETS[experiment]
    data = DATA.get(experiment, list)()
    extra = extra_args()
    fit_args = ["--config", config(experiment), *data, *extra]
    seconds, tested = fit_then_test(*fit_args, timeout=2 * budget + 120, cwd=tmp_path)
    value = logged(metric, tested)
    baseline, margin = BEATS.get(experiment, (None, 0.0))
    beside = f" ({baseline} = {logged(baseline, tested):.4%})" if baseline else ""
    options = f" ({' '.join(extra)})" if extra else ""
    print(f"\n{experiment}: {metric} = {value:.4%}{beside}, fit {seconds:.0f} s wall, {machine()}{options}")
    assert value >= target
    if baseline:
        assert value >= logged(baseline, tested) + margin
    assert seconds <= budget
