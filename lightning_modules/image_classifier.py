"""Image classification (notebook 15.2.4, 15.3 and 15.5).

`ImageClassifier` trains any network that maps images to class logits, chosen in the config (`model.init_args.net`,
e.g. those of `components.convnets`); `TorchvisionClassifier` fine-tunes a torchvision network (ImageNet weights, a new
head). The notebook's figures, litlab's targets and measured figures: the README.

    litlab fit --config configs/fashion_cnn.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[shirt.png]'
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torchvision.models import get_model, get_model_weights
from torchvision.transforms.v2 import CutMix

from lightning_modules.classifier import Classifier
from lightning_modules.components.convnets import Standardize
from lightning_modules.pretrained import TorchvisionWeights


class ClassifierSystem(Classifier):
    """Training, metrics and figures shared by the image classifiers; subclasses build `self.net`.

    Logs `val/acc`, `test/acc`; figures (the run folder's `figures/`, and W&B when on): a grid of validation images
    titled with their true and predicted classes each validation epoch (from outputs already computed, rank 0 only)
    and `test/confusion` at test end.
    Class names and their number come from the DataModule (`classes`, `num_classes`).

    Args:
        label_smoothing: cross-entropy label smoothing in training.
        logged_images: validation images shown each epoch (figures/val_examples.png, W&B; 0: none).
        kwargs: the optimizer and schedule (`Experiment`).
    """

    prediction_format = "{input}: {output} ({probability:.1%})"
    net: nn.Module

    def __init__(self, label_smoothing: ClosedUnitInterval = 0.0, logged_images: NonNegativeInt = 20, **kwargs) -> None:
        super().__init__(**kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) in [0, 1] -> logits (B, classes)

    def onnx_example(self, data_class: type) -> tuple[nn.Module, dict[str, Tensor], list[str]]:
        """float (batch, C, H, W) images in [0, 1] at the data's size -> logits (batch, classes)."""
        images = torch.rand(4, data_class.channels, *data_class.size, generator=torch.Generator().manual_seed(0))
        return self, {"image": images}, ["logits"]

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss, predicted = self.classify(self(x), y, stage, smoothing)
        if stage == "val" and (n := self.hparams.logged_images):
            self.keep_for_figures(images=x[:n], truth=y[:n], predicted=predicted[:n])
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.figure_batch is None:
            return
        classes = self.from_data("classes")
        images, truth, predicted = (self.figure_batch[k].cpu() for k in ("images", "truth", "predicted"))
        pixels = images.mul(255).round().byte().permute(0, 2, 3, 1).squeeze(-1)  # (N, H, W[, 3]) uint8
        captions = [f"true: {classes[t]} | pred: {classes[p]}" for t, p in zip(truth.tolist(), predicted.tolist())]
        self.report_images("val/examples", list(pixels.numpy()), captions)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        return self.class_records(self(batch["x"]), batch["name"])  # the files' names travel in the batch


class Ensemble(nn.Module):
    """Networks of the same inputs and outputs run side by side: (B, ...) -> (members, B, classes)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([net(x) for net in self.members])


class ImageClassifier(ClassifierSystem):
    """Any image network trained with cross-entropy.

    A network with a `whiten_from(images)` method (`AirbenchNet`) has it called with the first training batch (on
    rank 0, then broadcast), so its first layer starts from the data's statistics.

    Args:
        net: the network: its class path and every argument but the class count, which it takes first (as the
            networks of `components.convnets` do) and which comes from the data.
        vector_lr_scale: learning-rate factor of biases and norms (which get no weight decay).
        channels_last: NHWC memory layout (faster convolutions on GPUs with tensor cores and on oneDNN CPUs).
        flip_tta: outside training, average the logits of each image and its mirror image.
        shift_tta: outside training, also average the views shifted left and right by this many pixels (zero-padded;
            with `flip_tta`, their mirror images too): airbench's translated test-time views (0: none).
        cutmix: the share of training batches given CutMix (Yun et al., 2019): a rectangle of each image replaced by
            the same rectangle of another image of the batch, the target the two classes weighted by their areas.
        members: independently initialised copies of `net` trained side by side on the same batches, each by its own
            loss (a deep ensemble, Lakshminarayanan et al., 2017); outside training their logits are averaged, with
            the test-time views'. `train/loss` is the members' mean.
        num_classes: the data's at the first fit.
        kwargs: `ClassifierSystem`'s (label smoothing, logged images, the optimizer and schedule).
    """

    def __init__(
        self,
        net: Callable[[int], nn.Module],
        vector_lr_scale: PositiveFloat = 1.0,
        channels_last: bool = False,
        flip_tta: bool = False,
        shift_tta: NonNegativeInt = 0,
        cutmix: ClosedUnitInterval = 0.0,
        members: PositiveInt = 1,
        num_classes: PositiveInt | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)  # LightningCLI records `net` as its config (class path and arguments)
        self.make_net = net

    def add_class_layers(self, num_classes: int) -> None:
        nets = [self.make_net(num_classes) for _ in range(self.hparams.members)]
        net = nets[0] if len(nets) == 1 else Ensemble(nets)
        self.net = net.to(memory_format=torch.channels_last) if self.hparams.channels_last else net
        self.cutmix = CutMix(num_classes=num_classes)  # no parameters or buffers: checkpoints are unchanged

    def forward(self, x: Tensor) -> Tensor:
        views = [x] if self.training else self.test_time_views(x)
        if len(views) > 1:
            x = torch.cat(views)  # every view in one batch: (V * B, C, H, W)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)  # (V * B, classes), or (members, V * B, classes)
        if self.training:
            return logits  # an ensemble's members apart, each for its own loss
        if len(views) > 1:
            logits = logits.unflatten(-2, (len(views), -1)).mean(-3)  # the views' mean (the batch size stays dynamic)
        return logits if logits.dim() == 2 else logits.mean(0)  # (B, classes): the members' mean

    def test_time_views(self, x: Tensor) -> list[Tensor]:
        """The image, shifted right and left by `shift_tta` pixels, and with `flip_tta` each one's mirror image
        (neither: the image alone)."""
        views = [x]
        if shift := self.hparams.shift_tta:
            padded = F.pad(x, (shift, shift))  # (B, C, H, W + 2 shift)
            views += [padded[..., : -2 * shift], padded[..., 2 * shift :]]
        if self.hparams.flip_tta:
            views += [view.flip(-1) for view in views]
        return views

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        share = self.hparams.cutmix
        # drawn on the host, as CutMix's box (no sync); never when off, so the random stream stays the configs' own
        if stage == "train" and share > 0 and torch.rand(()) < share:
            batch = self.cut_and_mix(batch)
        return super()._shared_step(batch, stage)

    def classify(
        self, logits: Tensor, y: Tensor, stage: str, label_smoothing: float = 0.0
    ) -> tuple[Tensor, Tensor | None]:
        if logits.dim() == 2:
            return super().classify(logits, y, stage, label_smoothing)
        members = len(logits)  # training an ensemble: (members, B, classes), every member scored on the batch
        loss, predicted = super().classify(
            logits.flatten(0, 1), y.repeat(members, *[1] * (y.dim() - 1)), stage, label_smoothing
        )
        return loss * members, predicted  # the members' summed losses: each learns as it would alone

    def cut_and_mix(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """CutMix (torchvision's): a rectangle of uniformly drawn area (its centre anywhere, clipped at the edges) of
        every image replaced by that of the batch's previous image (the batches are shuffled); the targets become
        class probabilities (B, classes)."""
        x, y = self.cutmix(batch["x"], batch["y"])
        return {**batch, "x": x, "y": y}

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.global_step > 0 or batch_idx > 0:
            return
        for net in self.net.modules():  # the network, or each member of an ensemble, that whitens its input
            if hasattr(net, "whiten_from"):
                weight = net.whiten_from(batch["x"])
                weight.copy_(self.trainer.strategy.broadcast(weight, src=0))  # every DDP rank starts from rank 0's

    def parameter_groups(self) -> dict:
        return {"vector_lr_scale": self.hparams.vector_lr_scale}


class TorchvisionClassifier(TorchvisionWeights, ClassifierSystem):
    """A torchvision classification network (ImageNet weights or none) with a new `num_classes` head, fine-tuned.

    Inputs are resized on the device to `image_size` and standardised with the statistics of the weights' own
    transforms, inside the model, so a checkpoint (and its ONNX export) takes raw images in [0, 1]. The pretrained
    weights are fetched (rank 0, `prepare_data`) and loaded (`setup`) for `fit` only: `test`/`predict` from a
    checkpoint need neither the download nor a connection.

    Args:
        arch: a torchvision classification model name ("resnet18", "resnet50", ...).
        weights: its weights enum name ("IMAGENET1K_V1", ...), or None to train from scratch. Downloaded once into
            torch's hub cache ($TORCH_HOME/hub/checkpoints).
        num_classes: classes of the new head; the data's at the first fit.
        image_size: side the inputs are resized to (ImageNet networks see 224 px; CIFAR images are 32 px).
        freeze_backbone_epochs: epochs in which only the new head learns (the backbone's learning rate is 0; needs
            `litlab.optim.WarmupDecay`, or no schedule).
        channels_last: NHWC memory layout.
        kwargs: `ClassifierSystem`'s (label smoothing, logged images, the optimizer and schedule).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        weights: str | None = "IMAGENET1K_V1",
        num_classes: PositiveInt | None = None,
        image_size: PositiveInt = 224,
        freeze_backbone_epochs: NonNegativeInt = 0,
        channels_last: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.choose_weights(arch, weights)
        self.backbone = get_model(arch, weights=None)  # the weights arrive in `setup`
        self.features = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        transforms = (self.weights or get_model_weights(arch).DEFAULT).transforms()
        self.standardize = Standardize(transforms.mean, transforms.std)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def add_class_layers(self, num_classes: int) -> None:
        self.head = nn.Linear(self.features, num_classes)

    def load_pretrained(self, state: dict[str, Tensor]) -> None:
        self.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})

    def forward(self, x: Tensor) -> Tensor:
        size = self.hparams.image_size
        if x.shape[-2:] != (size, size):  # (B, 3, 32, 32) -> (B, 3, size, size), bilinear
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.size(-1) > size)
        x = self.standardize(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x))  # (B, classes)

    def parameter_groups(self) -> dict:
        epochs = max(1, self.trainer.max_epochs or 1)
        frozen_steps = int(self.hparams.freeze_backbone_epochs * self.trainer.estimated_stepping_batches / epochs)
        return {"frozen": self.backbone, "frozen_steps": frozen_steps}
