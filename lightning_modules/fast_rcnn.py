"""Object detection (notebook 15.6-15.7): Fast R-CNN over the data's region proposals, and torchvision's Faster R-CNN,
which proposes its own regions, as the baseline. Both are scored with COCO-style mean average precision (`val/map_50`,
`test/map_50`, `test/map` over IoU 0.50:0.95, see `detector.Detector`); Fast R-CNN also with the share of RoIs it
classifies right (`val/roi_acc`, `test/roi_acc`, the notebook's metric). Targets and measured figures: the README.

    litlab fit --config configs/fruit_fast_rcnn_scratch.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[basket.jpg]'   # JSONL + a PNG per image, boxes drawn
"""

from __future__ import annotations

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchvision.models import get_model

from lightning_modules.components.convnets import Standardize
from lightning_modules.components.detection import (
    RESNET_STAGES,
    TRAINABLE_ORDER,
    freeze_batchnorm,
    freeze_resnet_stages,
    losses_without_updates,
)
from lightning_modules.components.roi_head import RoIHead
from lightning_modules.detector import Detector
from lightning_modules.pretrained import TorchvisionWeights
from litlab.errors import LitlabError
from litlab.experiment import per_stage

STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}  # input pixels per feature cell after each stage


class FastRCNN(TorchvisionWeights, Detector):
    """Fast R-CNN: a torchvision ResNet's convolutional stages up to `feature_stage`, then the `RoIHead` over the
    data's region proposals (`--data.proposals`): RoIAlign at the stage's stride, two fully connected layers,
    classification and class-specific box regression.

    Args:
        arch, weights: torchvision ResNet and its ImageNet weights (None: from scratch); fetched for `fit` only.
        feature_stage: the last ResNet stage used ("layer3": stride 16, "layer4": stride 32).
        num_classes: object classes (without background); the data's at the first fit.
        roi_size, fc_dim, dropout: the RoI head.
        background_weight: cross-entropy weight of the background class (the notebook used 0.2).
        rois_per_image, fg_fraction: RoIs sampled per training image, and their foreground share.
        score_threshold, nms_iou, detections_per_image: inference. Per-class NMS at IoU 0.5, torchvision's default
            (the Fast R-CNN paper used 0.3): a fifth of the fruit in the Kaggle set overlap another of their class at
            IoU > 0.3, and 0.3 suppressed one of each such pair.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | None = "IMAGENET1K_V2",
        feature_stage: str = "layer3",
        num_classes: PositiveInt | None = None,
        roi_size: PositiveInt = 7,
        fc_dim: PositiveInt = 1024,
        dropout: ClosedUnitInterval = 0.3,
        background_weight: NonNegativeFloat = 1.0,
        rois_per_image: PositiveInt = 64,
        fg_fraction: ClosedUnitInterval = 0.25,
        score_threshold: ClosedUnitInterval = 0.05,
        nms_iou: ClosedUnitInterval = 0.5,
        detections_per_image: PositiveInt = 100,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if feature_stage not in STRIDES:
            raise LitlabError(f"--model.feature_stage={feature_stage!r}: one of layer1..layer4")
        self.choose_weights(arch, weights)
        resnet = get_model(arch, weights=None)
        stages = RESNET_STAGES[: RESNET_STAGES.index(feature_stage) + 1]
        self.backbone = nn.Sequential(*[getattr(resnet, s) for s in stages])
        self.channels = resnet.fc.in_features * STRIDES[feature_stage] // STRIDES["layer4"]  # widths double by stage
        if self.weights is not None:  # ImageNet statistics kept: a batch holds only a few images
            freeze_batchnorm(self.backbone)
        self.standardize = Standardize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.roi_acc = per_stage(MeanMetric)
        self.add_map_metrics()

    def setup(self, stage: str) -> None:
        if self.from_data("proposals") == "none":
            raise LitlabError("FastRCNN pools the data's region proposals: pass --data.proposals=fast (or quality)")

    def add_class_layers(self, num_classes: int) -> None:
        hp = self.hparams
        self.head = RoIHead(
            self.channels, STRIDES[hp.feature_stage], num_classes, hp.roi_size, hp.fc_dim, hp.dropout,
            hp.background_weight, hp.rois_per_image, hp.fg_fraction, hp.score_threshold, hp.nms_iou,
            hp.detections_per_image,
        )  # fmt: skip

    def load_pretrained(self, state: dict[str, Tensor]) -> None:
        resnet = get_model(self.hparams.arch, weights=None)
        resnet.load_state_dict(state)
        stages = [getattr(resnet, s) for s in RESNET_STAGES]
        self.backbone.load_state_dict(nn.Sequential(*stages[: len(self.backbone)]).state_dict())

    def forward(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (R, C+1) and box deltas (R, C+1, 4) of the RoIs (R, 5) of uint8 images (B, 3, S, S)."""
        features = self.backbone(self.standardize(images.float() / 255))  # (B, C, S/stride, S/stride)
        return self.head(features, rois)

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        images = batch["images"]
        rois, labels, targets = self.head.rois(batch["proposals"], batch["boxes"], batch["labels"], stage == "train")
        logits, deltas = self(images, rois)
        loss = self.head.loss(logits, deltas, labels, targets)
        self.log_loss(stage, loss, batch_size=len(images))
        if stage != "train":
            self.roi_acc[stage]((logits.argmax(1) == labels).float())
            self.log(f"{stage}/roi_acc", self.roi_acc[stage])
            found = self.head.detections(logits.detach(), deltas.detach(), rois, len(images), images.shape[-1])
            self.evaluate(batch, stage, found)
        return loss

    @torch.no_grad()
    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        images = batch["images"]
        rois, _, _ = self.head.rois(batch["proposals"], batch["boxes"], batch["labels"], sample=False)
        return self.head.detections(*self(images, rois), rois, len(images), images.shape[-1])


class FasterRCNN(TorchvisionWeights, Detector):
    """The baseline: torchvision's Faster R-CNN (ResNet-50 FPN v2) with its learned region proposals, COCO weights and
    a new box predictor for `num_classes` + background, fine-tuned in the same data and metrics.

    With COCO weights every BatchNorm is frozen (a batch holds four images) and only the last
    `trainable_backbone_layers` ResNet stages learn; from scratch (`weights: null`) everything learns with live
    BatchNorm. Validation and test losses are measured without touching any running statistic.

    Args:
        weights: torchvision detection weights ("COCO_V1") or None; fetched for `fit` only.
        num_classes, image_size: the data's class count and the side its images arrive at (the model's own resizing
            keeps it), at the first fit.
        trainable_backbone_layers: ResNet stages fine-tuned (0-5).
        kwargs: the optimizer and schedule (`Experiment`).
    """

    data_arguments = ("num_classes", "image_size")

    def __init__(
        self,
        weights: str | None = "COCO_V1",
        num_classes: PositiveInt | None = None,
        image_size: PositiveInt | None = None,
        trainable_backbone_layers: NonNegativeInt = 3,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.choose_weights("fasterrcnn_resnet50_fpn_v2", weights, name="Faster R-CNN")
        if not 0 <= trainable_backbone_layers <= len(TRAINABLE_ORDER):
            raise LitlabError(f"--model.trainable_backbone_layers={trainable_backbone_layers}: between 0 and 5")
        self.add_map_metrics()

    def add_class_layers(self, num_classes: int) -> None:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        size = self.data_argument("image_size")
        self.net = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, min_size=size, max_size=size)
        if self.weights is not None:  # torchvision freezes nothing for a model built without weights: done here
            freeze_batchnorm(self.net)
            freeze_resnet_stages(self.net.backbone.body, self.hparams.trainable_backbone_layers)
        in_features = self.net.roi_heads.box_predictor.cls_score.in_features
        self.net.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)

    def load_pretrained(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict({k: v for k, v in state.items() if "box_predictor" not in k}, strict=False)

    def _inputs(self, batch: dict) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        images = list(batch["images"].float() / 255)
        return images, [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        images, targets = self._inputs(batch)
        if stage == "train":
            loss = sum(self.net(images, targets).values())
        else:
            with losses_without_updates(self.net, self.device):
                loss = sum(self.net(images, targets).values())
            self.evaluate(batch, stage, self.net(images))
        self.log_loss(stage, loss, batch_size=len(images))
        return loss

    @torch.no_grad()
    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        return self.net(self._inputs(batch)[0])
