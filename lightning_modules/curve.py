"""Over-fitting and its cures on a curve (notebook 15.2): ten noisy samples of y = (x + 1)² on [-2, 0).

The notebook fits them with a one-layer network on the features x ... x⁶ (15.2.1: a 6th-degree polynomial, training
loss 0.0015 and validation loss 60 on [-3, 1) after 100k steps), a two-layer sigmoid network on the same features
(15.2.2: fits the noise, validation 5,000 times the training loss) and a one-layer network on x, x² (15.2.3: recovers
w = (2, 1), b = 1). The cures are options: weight decay (the optimizer's), dropout, more samples (the data's).
Validation reports the mean squared error inside the sampled range and beyond it apart, beside the noise floor (what
the true function scores on the same noisy points); a one-layer network logs its coefficients (`coef/b`, `coef/w1`,
...). Full-batch steps on tensors held on the device: 20k steps in seconds.

    litlab fit --config configs/curve_mlp.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveFloat, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric

from litlab.errors import LitlabError
from litlab.experiment import Experiment, per_stage

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class PowerFeatures(nn.Module):
    """x -> (u, u², ..., u^degree) with u = x / scale: the notebook's polynomial features (scale 1), computed in the
    network so that a curve can be drawn at any x."""

    def __init__(self, degree: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("exponents", torch.arange(1, degree + 1, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x / self.scale).unsqueeze(-1) ** self.exponents  # (B,) -> (B, degree)


class CurveNet(nn.Module):
    """Power features -> [Linear -> activation -> dropout] per hidden width -> Linear to one value."""

    def __init__(
        self, degree: int, hidden: Sequence[int], activation: str, dropout: float, feature_scale: float = 1.0
    ) -> None:
        super().__init__()
        sizes = [degree, *hidden]
        layers: list[nn.Module] = [PowerFeatures(degree, feature_scale)]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).squeeze(-1)  # (B,) -> (B,)


class CurveFit(Experiment):
    """A network fitted to samples of a curve by mean squared error.

    Args:
        degree: the input features are x, x², ..., x^degree (the notebook: 6 to over-fit, 2 to recover the truth).
        hidden: widths of the hidden layers; none is the notebook's one-layer network, whose weights are the
            polynomial's coefficients.
        activation: hidden nonlinearity (the notebook's is the sigmoid).
        dropout: dropout after each hidden layer (needs one), a cure.
        feature_scale: the features are powers of x / feature_scale. 1 is the notebook's; the largest |x| sampled
            (2) puts every power in [-1, 1]: on [-2, 0) x⁶ reaches 64, a tiny weight on it fits the noise, and
            neither a weight penalty nor dropout cured that unscaled. The coefficients are logged for x itself.
        kwargs: the optimizer (its `weight_decay` is the weight-penalty cure) and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/loss", "min"
    prediction_format = "x = {input:+.3f} -> {output:+.4f} (truth {truth:+.4f})"

    def __init__(
        self,
        degree: PositiveInt = 6,
        hidden: Sequence[int] = (),
        activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid",
        dropout: float = 0.0,
        feature_scale: PositiveFloat = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= dropout < 1:
            raise LitlabError(f"--model.dropout must be in [0, 1), got {dropout}")
        if dropout and not hidden:
            raise LitlabError("--model.dropout needs a hidden layer (--model.hidden '[11]'): it drops hidden units")
        self.net = CurveNet(degree, hidden, activation, dropout, feature_scale)
        self.mse_inside, self.mse_beyond, self.floor = (per_stage(MeanMetric) for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        prediction = self.net(batch["x"])  # (B,)
        loss = F.mse_loss(prediction, batch["y"])
        self.log_loss(stage, loss, batch_size=len(prediction))
        if stage != "train":
            error, inside = (prediction - batch["y"]).square(), batch["inside"].float()
            self.mse_inside[stage](error, inside)  # weighted means: no host sync to select the points
            self.mse_beyond[stage](error, 1 - inside)
            self.floor[stage]((batch["truth"] - batch["y"]).square())
            self.log(f"{stage}/mse_inside", self.mse_inside[stage], prog_bar=True)
            self.log(f"{stage}/mse_beyond", self.mse_beyond[stage], prog_bar=True)
            self.log(f"{stage}/noise_floor", self.floor[stage])
        return loss

    def coefficients(self) -> dict[str, Tensor] | None:
        """{"b": ..., "w1": ..., ...} when the network is one linear layer on the powers of x, else None."""
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
        if len(linears) != 1:
            return None
        weight, bias = linears[0].weight.detach()[0], linears[0].bias.detach()[0]
        scale = self.hparams.feature_scale
        return {"b": bias, **{f"w{k}": w / scale**k for k, w in enumerate(weight, start=1)}}

    def on_validation_epoch_end(self) -> None:
        if (coefficients := self.coefficients()) is not None:
            self.log_dict({f"coef/{name}": value for name, value in coefficients.items()})

    def draw(self) -> None:
        """The samples, the true curve and the fitted one, over the sampled range and beyond (`figures/curve.png`)."""
        if not self.reporting():
            return
        plot = self.from_data("curve_plot")
        grid, truth = (t.to(self.device) for t in plot["truth"])
        was_training = self.training
        self.eval()
        with torch.no_grad():
            fitted = self(grid)
        self.train(was_training)
        hidden = f"hidden {list(self.hparams.hidden)}" if self.hparams.hidden else "one layer"
        scale = self.hparams.feature_scale
        x = "x" if scale == 1 else f"(x/{scale:g})"
        self.report_lines(
            "curve",
            {"true curve": (grid, truth), "fitted": (grid, fitted)},
            plot["samples"],
            shade=plot["sampled_range"],
            title=f"features {x}..{x}^{self.hparams.degree}, {hidden}: {len(plot['samples'][0])} samples",
        )

    def on_train_end(self) -> None:
        self.draw()

    def on_test_end(self) -> None:
        self.draw()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        output = self(batch["x"])
        return [
            {"input": x, "output": y, "truth": t}
            for x, y, t in zip(batch["x"].tolist(), output.tolist(), batch["truth"].tolist())
        ]
