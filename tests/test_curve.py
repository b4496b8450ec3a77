"""Curve fitting (notebook 15.2): the generated samples, the recovered coefficients, the figures and bad settings."""

from __future__ import annotations

import pytest
import torch
from conftest import QUIET, cli, config, fails_in_one_line, tiny

from datamodules.curve import CurveData, polynomial


def test_samples_are_the_notebooks_grid_and_reproducible_by_seed():
    data = CurveData(train_size=10, noise=0.05, val_size=500, seed=3)
    train, val = data.make_split("train"), data.make_split("val")
    assert torch.allclose(train["x"], torch.tensor([-2 + i * 0.2 for i in range(10)]))  # the notebook's x
    assert torch.allclose(train["truth"], (train["x"] + 1) ** 2)
    noise = train["y"] - train["truth"]
    assert 0 < noise.abs().max() < 0.25 and train["inside"].all()
    # validation: uniform over [-3, 1), both inside and beyond the sampled range, flagged correctly
    assert val["x"].min() >= -3 and val["x"].max() < 1
    assert torch.equal(val["inside"], (val["x"] >= -2) & (val["x"] < 0))
    assert 0.3 < val["inside"].float().mean() < 0.7
    assert (val["y"] - val["truth"]).square().mean() == pytest.approx(0.05**2, rel=0.25)
    again, other = CurveData(seed=3, val_size=500), CurveData(seed=4, val_size=500)
    assert all(torch.equal(again.make_split("val")[k], val[k]) for k in val)
    assert not torch.equal(other.make_split("val")["x"], val["x"])
    assert not torch.equal(data.make_split("test")["x"], val["x"])  # the test split has its own draw
    quiet = CurveData(noise=0.0).make_split("train")
    assert torch.equal(quiet["y"], quiet["truth"])


def test_polynomial_is_constant_first():
    x = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.allclose(polynomial([1, 2, 1], x), (x + 1) ** 2)
    assert torch.allclose(polynomial([0, 0, 0, 1], x), x**3)


def test_quadratic_fit_recovers_the_coefficients_and_draws_the_curve(tmp_path):
    run = cli(
        "fit", "--config", config("curve_quadratic"), *QUIET, f"--trainer.default_root_dir={tmp_path}/runs",
        "--trainer.max_epochs=3",
    )  # fmt: skip
    coefficients = {k: float(v) for k, v in run.model.coefficients().items()}
    assert coefficients == pytest.approx({"w1": 2.0, "w2": 1.0, "b": 1.0}, abs=0.05)
    assert {"coef/w1", "coef/w2", "coef/b"} <= set(run.trainer.callback_metrics)
    assert run.trainer.callback_metrics["val/mse_beyond"] < 0.01  # the right model extrapolates
    (drawn,) = tmp_path.glob("runs/**/figures/curve.png")
    # testing a checkpoint draws into a folder of its own, leaving the fit's figure as it was
    fitted = drawn.read_bytes()
    (run,) = tmp_path.glob("runs/curve_quadratic/*")
    last = run / "checkpoints" / "last.ckpt"
    cli("test", "--ckpt_path", last, *QUIET)
    assert (run / "figures" / "test-last" / "curve.png").is_file() and drawn.read_bytes() == fitted


def test_six_features_over_fit_beyond_the_sampled_range(tmp_path):
    run = cli(
        "fit", "--config", config("curve_poly6"), *QUIET, f"--trainer.default_root_dir={tmp_path}/runs",
        "--trainer.enable_checkpointing=false", "--trainer.max_epochs=3",
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert metrics["val/mse_beyond"] > 10 * metrics["val/mse_inside"]
    assert metrics["val/mse_beyond"] > 10 * metrics["val/noise_floor"]
    assert len(run.model.coefficients()) == 7  # b, w1..w6


def test_scaled_features_report_the_coefficients_of_x_itself():
    from lightning_modules.curve import CurveFit

    model = CurveFit(degree=2, feature_scale=2.0)
    (linear,) = [m for m in model.net.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():  # (x + 1)² = 1 + 2x + x² = 1 + 4u + 4u² with u = x / 2
        linear.weight.copy_(torch.tensor([[4.0, 4.0]]))
        linear.bias.fill_(1.0)
    x = torch.tensor([-3.0, -1.0, 0.5])
    assert torch.allclose(model(x), (x + 1) ** 2)
    coefficients = {k: float(v) for k, v in model.coefficients().items()}
    assert coefficients == pytest.approx({"b": 1.0, "w1": 2.0, "w2": 1.0})


def test_a_network_with_hidden_layers_has_no_coefficients():
    run = cli("fit", "--config", config("curve_mlp"), *tiny("curve_mlp"), *QUIET, run=False)
    assert run.model.coefficients() is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.dropout=0.2"], "needs a hidden layer"),
        (["--data.x_range=[0, -2]"], "low < high"),
    ],
)
def test_bad_curve_settings_are_one_line(flags, message, capfd):
    fails_in_one_line(capfd, "fit", "--config", config("curve_poly6"), *QUIET, *flags, naming=message)
