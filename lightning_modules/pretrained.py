"""Torchvision weights for a LightningModule: fetched once (rank 0, `prepare_data`) and loaded into the network for a
`fit` only, so `test`/`predict` from a checkpoint never need a download or a connection."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from litlab.errors import LitlabError, first_line


class TorchvisionWeights:
    """Mixin of an `Experiment`: call `choose_weights(model, weights)` in the constructor and implement
    `load_pretrained(state)`, which runs once the network is built (`configure_model`) in a fit; a resumed fit
    restores its checkpoint over what that loads."""

    weights = None
    weights_name = "model"
    _pretrained_loaded = False

    def choose_weights(self, model: str, weights: str | None, name: str | None = None) -> None:
        """`self.weights`: the torchvision weights `weights` of `model` (an enum name such as "IMAGENET1K_V1"), or
        None; `name` is how errors call the model (default: `model`)."""
        from torchvision.models import get_model_weights

        try:
            self.weights = get_model_weights(model)[weights] if weights else None
        except (ValueError, KeyError):
            raise LitlabError(f"unknown torchvision model or weights: arch={model!r}, weights={weights!r}") from None
        self.weights_name = name or model

    def pretrained_state(self) -> dict[str, Tensor]:
        try:
            return self.weights.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as err:  # offline (URLError is an OSError), or a corrupt download
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise LitlabError(
                f"could not load {self.weights_name} weights {self.weights.name} (looked in {cache}; download "
                f"failed: {first_line(err, 120)}): connect to the internet once, or train from scratch with "
                f"--model.init_args.weights=null"
            ) from None

    def load_pretrained(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.weights is not None and self.trainer.state.fn == "fit":
            self.pretrained_state()  # rank 0 fills the cache

    def configure_model(self) -> None:
        super().configure_model()
        trainer = self.attached_trainer()
        if self.weights is None or self._pretrained_loaded or trainer is None or trainer.state.fn != "fit":
            return
        self.load_pretrained(self.pretrained_state())
        self._pretrained_loaded = True
