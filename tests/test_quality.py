"""The targets of the experiments whose data is generated here, on their default configs, end to end.

Slow (minutes each): `make test` skips them; run `.venv/bin/python -m pytest -m slow -n 0 -s` on a quiet machine.
Each prints its measured line for the README: metric, fit wall time (the whole `litlab fit` command), machine.
`LITLAB_ARGS` appends arguments to every fit, e.g. `--config configs/trainer/cpu_bf16.yaml` on a CPU with AVX512-BF16
or AMX (the line then says so).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import config
from quality_runs import extra_args, fit_then_test, logged, machine

from datamodules.synthetic_fruit import write_dataset

pytestmark = pytest.mark.slow

TARGETS = {
    # experiment: (metric, at least, fit wall seconds at most)
    "xor_mlp": ("test/acc", 0.998, 20),
    "adder_lstm": ("test/exact_match", 0.995, 15 * 60),
    "adder_transformer": ("test/exact_match", 0.999, 7 * 60),  # make run: venv, this fit and its test in 10 min
    "fruit_fast_rcnn_scratch": ("test/map_50", 0.8, 15 * 60),
    # 30 minutes on its default text, Jane Eyre (tests/test_real_data.py); this prose has 302 validation segments
    # to generate at each of its four validations against the novel's 181 (measured: 48.51 %, copying 35.60 %)
    "spell_bart_tiny": ("test/exact_match", 0.45, 35 * 60),
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
