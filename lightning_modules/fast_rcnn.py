"""Object detection: Fast R-CNN over selective-search proposals, and torchvision's Faster R-CNN as a baseline
(notebook 15.6-15.7).

The notebook's hand-made Fast R-CNN trained one image per step, pooled RoIs at the wrong scale (1/16 on a 1/32 feature
map) for two days, and measured only RoI accuracy (90 %) with "very bad" detections. Here several images share a
batch, RoIAlign runs at the stride the backbone really has (measured at construction), and detections are scored with
COCO-style mean average precision: `val/map_50`, `test/map_50`, `test/map` (IoU 0.50:0.95), plus `val/roi_acc` (the
notebook's metric). Targets and measured figures: the README.

    litlab fit --config configs/fruit_fast_rcnn.yaml --data.data_dir data/fruit
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[basket.jpg]'   # JSONL + a PNG per image, boxes drawn
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchvision.models import get_model
from torchvision.ops import batched_nms, roi_align

from lightning_modules.components.convnets import Standardize
from lightning_modules.components.detection import (
    RESNET_STAGES,
    TRAINABLE_ORDER,
    freeze_batchnorm,
    freeze_resnet_stages,
    losses_without_updates,
)
from lightning_modules.detector import Detector
from litlab.box_coding import decode_boxes
from litlab.errors import LitlabError
from litlab.optim import LRSchedulerCallable, OptimizerCallable
from litlab.pretrained import TorchvisionWeights


class FastRCNN(TorchvisionWeights, Detector):
    """Fast R-CNN: a torchvision ResNet's convolutional stages, RoIAlign (7x7 at the stride the features really
    have), two fully connected layers of `fc_dim` with ReLU and dropout, a classifier (classes + background) and
    class-specific box regression. Loss: cross-entropy (background weighted by `background_weight`) + smooth L1 on
    foreground RoIs.

    Args:
        arch, weights: torchvision ResNet and its ImageNet weights (None: from scratch); fetched for `fit` only.
        feature_stage: the last ResNet stage used ("layer3": stride 16, "layer4": stride 32).
        num_classes: object classes (without background); the data's at the first fit.
        roi_size, fc_dim, dropout: the RoI head.
        background_weight: cross-entropy weight of the background class (the notebook used 0.2).
        score_threshold, nms_iou, detections_per_image: inference. Per-class NMS at IoU 0.5, torchvision's default
            (the Fast R-CNN paper used 0.3): a fifth of the fruit in the Kaggle set overlap another of their class at
            IoU > 0.3, and 0.3 suppressed one of each such pair.
        optimizer, lr_scheduler: see `litlab.optim` (None: a constant rate).
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
        score_threshold: ClosedUnitInterval = 0.05,
        nms_iou: ClosedUnitInterval = 0.5,
        detections_per_image: PositiveInt = 100,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.choose_weights(arch, weights)
        resnet = get_model(arch, weights=None)
        if feature_stage not in RESNET_STAGES[4:]:
            raise LitlabError(f"--model.feature_stage={feature_stage!r}: one of layer1..layer4")
        stages = RESNET_STAGES[: RESNET_STAGES.index(feature_stage) + 1]
        self.backbone = nn.Sequential(*[getattr(resnet, s) for s in stages])
        if self.weights is not None:  # ImageNet statistics kept: a batch holds only a few images
            freeze_batchnorm(self.backbone)
        self.standardize = Standardize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        with torch.no_grad():  # the stride and width the features really have, measured
            probe = self.backbone.eval()(torch.zeros(1, 3, 224, 224))
        self.backbone.train()
        self.stride, channels = 224 / probe.shape[-1], probe.shape[1]
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * roi_size * roi_size, fc_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.roi_acc = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self._metrics()
        if self.sized():
            self.configure_model()

    def add_class_layers(self, num_classes: int) -> None:
        fc_dim = self.hparams.fc_dim
        self.classify = nn.Linear(fc_dim, num_classes + 1)
        self.regress = nn.Linear(fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.regress.weight, std=0.001)
        nn.init.zeros_(self.regress.bias)
        class_weights = torch.ones(num_classes + 1)
        class_weights[0] = self.hparams.background_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def load_pretrained(self, state: dict[str, Tensor]) -> None:
        resnet = get_model(self.hparams.arch, weights=None)
        resnet.load_state_dict(state)
        stages = [getattr(resnet, s) for s in RESNET_STAGES]
        self.backbone.load_state_dict(nn.Sequential(*stages[: len(self.backbone)]).state_dict())

    def forward(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (R, C+1) and box deltas (R, C+1, 4) for RoIs (R, 5: batch index, x1 y1 x2 y2 in pixels)."""
        features = self.backbone(self.standardize(images.float() / 255))  # (B, C, H/s, W/s)
        pooled = roi_align(
            features, rois, self.hparams.roi_size, spatial_scale=1 / self.stride, sampling_ratio=2, aligned=True
        )  # (R, C, 7, 7)
        hidden = self.head(pooled)
        return self.classify(hidden), self.regress(hidden).view(len(rois), -1, 4)

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        logits, deltas = self(batch["images"], batch["rois"])
        labels, targets = batch["roi_labels"], batch["roi_targets"]
        classification = F.cross_entropy(logits, labels, weight=self.class_weights)
        foreground = labels > 0
        chosen = deltas[torch.arange(len(labels), device=labels.device), labels]  # (R, 4): each RoI's own class
        regression = F.smooth_l1_loss(chosen[foreground], targets[foreground], beta=1 / 9, reduction="sum")
        loss = classification + regression / max(1, len(labels))
        self.log_loss(stage, loss, batch_size=len(batch["images"]))
        if stage != "train":
            self.roi_acc[stage]((logits.argmax(1) == labels).float())
            self.log(f"{stage}/roi_acc", self.roi_acc[stage])
            self._evaluate(batch, stage, self.postprocess(batch, logits.detach(), deltas.detach()))
        return loss

    @torch.no_grad()
    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        return self.postprocess(batch, *self(batch["images"], batch["rois"]))

    def postprocess(self, batch: dict, logits: Tensor, deltas: Tensor) -> list[dict[str, Tensor]]:
        """Per image: boxes decoded per class, clipped, above `score_threshold`, after per-class NMS, best first."""
        hp, size, rois = self.hparams, batch["images"].shape[-1], batch["rois"]
        scores = logits.float().softmax(1)[:, 1:]  # (R, C) without background
        boxes = decode_boxes(rois[:, None, 1:], deltas[:, 1:].float()).clamp(0, size - 1)  # (R, C, 4)
        image = rois[:, 0].long()[:, None].expand_as(scores)
        labels = torch.arange(1, scores.size(1) + 1, device=scores.device).expand_as(scores)
        keep = scores > hp.score_threshold
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        keep = batched_nms(boxes, scores, labels + image * logits.size(1), hp.nms_iou)  # per (image, class)
        found = []
        for b in range(len(batch["images"])):
            mine = keep[image[keep] == b][: hp.detections_per_image]  # batched_nms keeps by decreasing score
            found.append({"boxes": boxes[mine], "scores": scores[mine], "labels": labels[mine]})
        return found


class FasterRCNN(TorchvisionWeights, Detector):
    """The baseline: torchvision's Faster R-CNN (ResNet-50 FPN v2) with its learned region proposals, COCO weights and
    a new box predictor for `num_classes` + background, fine-tuned in the same data and metrics.

    With COCO weights every BatchNorm is frozen (a batch holds four images) and only the last
    `trainable_backbone_layers` ResNet stages learn; from scratch (`weights: null`) everything learns with live
    BatchNorm. Validation and test losses are measured without touching any running statistic.

    Args:
        weights: torchvision detection weights ("COCO_V1") or None; fetched for `fit` only.
        num_classes: object classes (without background); the data's at the first fit.
        image_size: the side images arrive at (the model's own resizing is set to keep it).
        trainable_backbone_layers: ResNet stages fine-tuned (0-5).
        optimizer, lr_scheduler: see `litlab.optim` (None: a constant rate).
    """

    def __init__(
        self,
        weights: str | None = "COCO_V1",
        num_classes: PositiveInt | None = None,
        image_size: PositiveInt = 320,
        trainable_backbone_layers: NonNegativeInt = 3,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        self.choose_weights("fasterrcnn_resnet50_fpn_v2", weights, name="Faster R-CNN")
        if not 0 <= trainable_backbone_layers <= len(TRAINABLE_ORDER):
            raise LitlabError(f"--model.trainable_backbone_layers={trainable_backbone_layers}: between 0 and 5")
        self.net = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, min_size=image_size, max_size=image_size
        )
        if self.weights is not None:  # torchvision freezes nothing for a model built without weights: done here
            freeze_batchnorm(self.net)
            freeze_resnet_stages(self.net.backbone.body, trainable_backbone_layers)
        self._metrics()
        if self.sized():
            self.configure_model()

    def add_class_layers(self, num_classes: int) -> None:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

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
            self._evaluate(batch, stage, self.net(images))
        self.log_loss(stage, loss, batch_size=len(images))
        return loss

    @torch.no_grad()
    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        return self.net(self._inputs(batch)[0])
