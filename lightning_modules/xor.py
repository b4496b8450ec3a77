"""XOR with a multilayer perceptron (notebook 15.1).

Label: do x1 and x2 share a sign, for x ~ N(0, I2). The notebook's 2-9-5-1 sigmoid MLP, trained with MSE towards +-1 by
full-batch SGD (lr 0.1), had 94.92 % of test points within 0.15 of their +-1 target after 200k iterations:
`configs/xor_seed.yaml` runs that network as it was and logs the same `test/acc_within_0.15` beside `test/acc` (sign).
`configs/xor_mlp.yaml` is the good default (ReLU, BCE, AdamW, cosine schedule): >= 99.8 % test/acc in seconds.

    litlab fit --config configs/xor_mlp.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from litlab.experiment import Experiment, per_stage

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """2 -> hidden... -> 1, one scalar score per point."""

    def __init__(self, hidden: Sequence[int], activation: str, normal_init: bool) -> None:
        super().__init__()
        sizes = [2, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], 1))
        self.layers = nn.Sequential(*layers)
        if normal_init:  # the notebook's torch.randn weights and zero biases
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).squeeze(-1)  # (B, 2) -> (B,)


class XorMLP(Experiment):
    """An MLP that says whether a point's coordinates share a sign.

    Args:
        hidden: widths of the hidden layers.
        activation: hidden nonlinearity.
        loss: "bce" on the logit, or "mse" of the raw output towards +1 (same sign) / -1 (the notebook's).
        normal_init: N(0, 1) weights and zero biases, as the notebook drew them (default: PyTorch's init).
        kwargs: the optimizer and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/acc", "max"
    prediction_format = "{input} -> {output} (score {score:+.3f})"

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu",
        loss: Literal["bce", "mse"] = "bce",
        normal_init: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net = MLP(hidden, activation, normal_init)
        self.acc, self.within = per_stage(BinaryAccuracy), per_stage(MeanMetric)

    def forward(self, x: Tensor) -> Tensor:
        """Score in [-1, 1] per point: > 0 means same sign."""
        out = self.net(x)
        return out if self.hparams.loss == "mse" else torch.tanh(out / 2)  # tanh(z/2) = 2 sigmoid(z) - 1

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]  # (B, 2), (B,) in {0, 1}
        out = self.net(x)
        sign_target = 2 * y - 1
        if self.hparams.loss == "mse":
            loss, score = F.mse_loss(out, sign_target), out
        else:
            loss, score = F.binary_cross_entropy_with_logits(out, y), torch.tanh(out / 2)
        self.log_loss(stage, loss, batch_size=len(y))
        if stage != "train":
            self.acc[stage](score > 0, y)
            self.within[stage]((score - sign_target).abs() < 0.15)
            self.log(f"{stage}/acc", self.acc[stage], prog_bar=True)
            self.log(f"{stage}/acc_within_0.15", self.within[stage])
        return loss

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        scores = self(batch["x"])
        return [
            {"input": [round(v, 6) for v in point], "output": "same sign" if s > 0 else "opposite signs", "score": s}
            for point, s in zip(batch["x"].tolist(), scores.tolist())
        ]
