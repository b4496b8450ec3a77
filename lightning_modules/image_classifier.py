"""Image classification (notebook 15.2.4, 15.3 and 15.5): one LightningModule for any network that maps images to
class logits.

The network is chosen in the config (`model.init_args.net`, any nn.Module, e.g. those of `components.convnets`).
Targets on FashionMNIST (GPU workstation): `fashion_cnn` >= 92.5 %, `fashion_resnet` >= 95.5 % test/acc (notebook: 91 %
and 94.69 %).

    litlab fit --config configs/fashion_cnn.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[shirt.png]'
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightning_modules.experiment import Experiment
from lightning_modules.optim import OptimizerName, ScheduleName, configure_optimizers


class ClassifierSystem(Experiment):
    """Training, metrics and W&B figures shared by the image classifiers; subclasses build `self.net`.

    Logs `val/acc`, `test/acc`; with a W&B logger, a grid of validation images titled with their true and predicted
    classes each validation epoch (from outputs already computed, rank 0 only) and `test/confusion` at test end.
    Class names come from the DataModule (`classes`).
    """

    monitor, monitor_mode = "val/acc", "max"
    prediction_format = "{input}: {output} ({probability:.1%})"
    net: nn.Module

    def __init__(self, num_classes: int, label_smoothing: float, logged_images: int) -> None:
        super().__init__()
        self.acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes, validate_args=False) for s in ("val", "test")})
        self.confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.label_smoothing = label_smoothing
        self.logged_images = logged_images
        self._shown: tuple[Tensor, Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) in [0, 1] -> logits (B, classes)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        self.log_loss(stage, loss, batch_size=len(y))
        if stage != "train":
            predicted = logits.argmax(1)
            self.acc[stage](predicted, y)
            self.log(f"{stage}/acc", self.acc[stage], prog_bar=True)
            if stage == "test":
                self.confusion(predicted, y)
            elif self._shown is None and self.logged_images:  # the first images of the epoch, for the W&B grid
                n = self.logged_images
                self._shown = x[:n].detach(), y[:n].detach(), predicted[:n].detach()
        return loss

    def _wandb(self):
        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        return loggers[0].experiment if loggers and self.trainer.is_global_zero else None

    def on_validation_epoch_end(self) -> None:
        shown, self._shown = self._shown, None
        run = self._wandb()
        if run is None or shown is None or self.trainer.sanity_checking:
            return
        import wandb

        classes = self.trainer.datamodule.classes
        images, truth, predicted = (t.cpu() for t in shown)  # one copy per epoch
        pixels = images.mul(255).round().byte().permute(0, 2, 3, 1).squeeze(-1)  # (N, H, W[, 3]) uint8
        run.log(
            {
                "val/examples": [
                    wandb.Image(picture, caption=f"true: {classes[t]} | pred: {classes[p]}")
                    for picture, t, p in zip(pixels.numpy(), truth.tolist(), predicted.tolist())
                ],
                "trainer/global_step": self.global_step,
            }
        )

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()  # (true, predicted) counts, summed over DDP ranks
        self.confusion.reset()
        run = self._wandb()
        if run is None:
            return
        import wandb

        n = len(matrix)
        pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n))  # (n*n, 2): every (true, predicted) cell
        samples = pairs.repeat_interleave(matrix.flatten(), dim=0)  # one row per test image
        run.log(
            {
                "test/confusion": wandb.plot.confusion_matrix(
                    y_true=samples[:, 0].tolist(),
                    preds=samples[:, 1].tolist(),
                    class_names=list(self.trainer.datamodule.classes),
                    title="test confusion",
                )
            }
        )

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        data = self.trainer.datamodule
        probability, predicted = self(batch["x"]).softmax(1).max(1)
        return [
            {"input": str(data.predict_files[i]), "output": data.classes[c], "probability": round(p, 6)}
            for i, c, p in zip(batch["index"].tolist(), predicted.tolist(), probability.tolist())
        ]


class ImageClassifier(ClassifierSystem):
    """Any image network trained with cross-entropy.

    Args:
        net: the network (class path and arguments in the config); it must have a `num_classes` attribute.
        label_smoothing: cross-entropy label smoothing in training.
        optimizer, lr, weight_decay, momentum, schedule: see `lightning_modules.optim`.
        channels_last: NHWC memory layout (faster convolutions on GPUs with tensor cores).
        logged_images: validation images shown in W&B each epoch (0: none).
    """

    def __init__(
        self,
        net: nn.Module,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: ScheduleName = "cosine",
        channels_last: bool = False,
        logged_images: int = 20,
    ) -> None:
        super().__init__(net.num_classes, label_smoothing, logged_images)
        self.save_hyperparameters()  # LightningCLI records `net` as its config (class path and arguments)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        total_steps = self.trainer.estimated_stepping_batches
        return configure_optimizers(self, total_steps, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum, hp.schedule)
