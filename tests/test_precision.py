"""Precision that suits the hardware: bf16 only where the CPU (AVX512-BF16, AMX) or GPU has it; no experiment config
picks bf16 for a CPU, and asking for it on a CPU without it is said in one line."""

from __future__ import annotations

import pytest
import yaml
from conftest import CONFIG_DIR, EXPERIMENTS, QUIET, cli, config, tiny

from litlab import hardware
from litlab.cli import fit_parser
from litlab.hardware import cpu_has_native_bf16, cpu_vector_unit, precision_notice

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
ZEN4 = AVX2 | {"avx512f", "avx512_bf16"}


def test_native_bf16_is_read_from_the_cpu_flags():
    assert not cpu_has_native_bf16(AVX2) and not cpu_has_native_bf16(AVX2 | {"avx512f"})
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS) and cpu_has_native_bf16(ZEN4)
    assert cpu_has_native_bf16({"fp", "asimd", "bf16"})  # an ARM CPU's "Features"
    assert [cpu_vector_unit(f) for f in (AVX2, ZEN4, SAPPHIRE_RAPIDS, set())] == ["AVX2", "AVX-512 BF16", "AMX", ""]


def test_bf16_on_a_cpu_without_it_gets_a_notice_and_nothing_else_does():
    notice = precision_notice("bf16-mixed", "cpu", AVX2)
    assert notice is not None and "AVX2" in notice and "--trainer.precision=32-true" in notice
    assert precision_notice("bf16-true", "cpu", AVX2) is not None
    assert precision_notice("bf16-mixed", "cpu", ZEN4) is None
    assert precision_notice("32-true", "cpu", AVX2) is None and precision_notice(None, "cpu", AVX2) is None


def test_the_cli_says_it_before_training(monkeypatch, lightning_logs):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2)
    bf16 = [
        "--config",
        config("xor_mlp"),
        *tiny("xor_mlp"),
        "--trainer.precision=bf16-mixed",
        "--trainer.accelerator=cpu",
    ]
    cli("validate", *bf16, *QUIET)
    assert sum("--trainer.precision=32-true" in r.getMessage() for r in lightning_logs.records) == 1
    lightning_logs.clear()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ZEN4)
    cli("validate", *bf16, *QUIET)
    assert not any("32-true" in r.getMessage() for r in lightning_logs.records)


def bf16_off_a_gpu(trainer) -> bool:
    """Whether a resolved trainer config asks for bf16 without asking for a GPU (so a CPU without it would emulate)."""
    return "bf16" in str(trainer.precision) and str(trainer.accelerator) not in ("gpu", "cuda")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_experiment_config_picks_bf16_for_a_cpu(experiment):
    resolved = fit_parser(["--config", config(experiment)]).parse_args(["--config", config(experiment)])
    assert not bf16_off_a_gpu(resolved.trainer), f"{experiment}: bf16 would run on a CPU too"


def test_the_check_sees_a_config_that_picks_bf16(tmp_path):
    (tmp_path / "bf16.yaml").write_text("trainer:\n  precision: bf16-mixed\n")
    args = ["--config", config("xor_mlp"), "--config", str(tmp_path / "bf16.yaml")]
    assert bf16_off_a_gpu(fit_parser(args).parse_args(args).trainer)
    args += ["--config", config("trainer/gpu")]
    assert not bf16_off_a_gpu(fit_parser(args).parse_args(args).trainer)


def test_the_presets_name_their_hardware():
    presets = {p.stem: yaml.safe_load(p.read_text())["trainer"] for p in (CONFIG_DIR / "trainer").glob("*.yaml")}
    assert presets["cpu_bf16"] == {"accelerator": "cpu", "precision": "bf16-mixed"}
    assert presets["gpu"]["accelerator"] == presets["ddp"]["accelerator"] == "gpu"
