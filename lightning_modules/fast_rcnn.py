"""Object detection: Fast R-CNN over selective-search proposals, and torchvision's Faster R-CNN as a baseline
(notebook 15.6-15.7).

The notebook's hand-made Fast R-CNN trained one image per step, pooled RoIs at the wrong scale (1/16 on a 1/32 feature
map) for two days, and measured only RoI accuracy (90 %) with "very bad" detections. Here several images share a
batch, RoIAlign runs at the stride the backbone really has (measured at construction), and detections are scored with
COCO-style mean average precision: `val/map_50`, `test/map_50`, `test/map` (IoU 0.50:0.95), plus `val/roi_acc` (the
notebook's metric). Targets on the real fruit data (GPU): Fast R-CNN `test/map_50` >= 0.90, Faster R-CNN reported
beside it.

    litlab fit --config configs/fruit_fast_rcnn.yaml --data.data_dir data/fruit
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[basket.jpg]'   # JSONL + a PNG per image, boxes drawn
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.detection import MeanAveragePrecision
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
from litlab.box_coding import decode_boxes
from litlab.errors import LitlabError
from litlab.experiment import Experiment
from litlab.optim import LRSchedulerCallable, OptimizerCallable
from litlab.pretrained import TorchvisionWeights


def wandb_boxes(found: dict[str, Tensor], caption: str, size: int, classes: dict[int, str]) -> dict:
    """Boxes (pixels of a `size` square image) as a `wandb.Image` box group."""
    data = [
        {
            "position": dict(zip(("minX", "minY", "maxX", "maxY"), (box / size).tolist())),
            "class_id": int(label),
            "box_caption": caption,
        }
        for box, label in zip(found["boxes"].float().cpu(), found["labels"].cpu())
    ]
    return {"box_data": data, "class_labels": classes}


class Detector(Experiment):
    """What both detectors share: mAP metrics, W&B box overlays, predictions in original pixels with a drawn PNG.
    Subclasses implement `detect(batch) -> list of {"boxes", "scores", "labels"}` in resized-image pixels."""

    monitor, monitor_mode = "val/map_50", "max"
    prediction_format = "{input}: {summary}"
    shown_score = 0.5  # detections printed per image (all above score_threshold are written)

    def _metrics(self) -> None:
        self.map = nn.ModuleDict({s: MeanAveragePrecision(box_format="xyxy", iou_type="bbox") for s in ("val", "test")})

    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        raise NotImplementedError

    def _evaluate(self, batch: dict, stage: str, detections: list[dict[str, Tensor]]) -> None:
        truth = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
        self.map[stage].update(detections, truth)
        if stage == "val" and not self._shown:
            self._shown = [(image, d, t) for image, d, t in zip(batch["images"][:4], detections, truth)]

    def on_validation_epoch_start(self) -> None:
        self._shown = []

    def _log_map(self, stage: str) -> None:
        scores = self.map[stage].compute()  # COCO evaluation once per epoch, summed over DDP ranks
        self.map[stage].reset()
        self.log(f"{stage}/map_50", scores["map_50"], prog_bar=True, sync_dist=False)
        if stage == "test":
            self.log("test/map", scores["map"])

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        run = self.wandb_run()
        if run is None or self.trainer.sanity_checking or not self._shown:
            return
        import wandb

        classes = {i + 1: c for i, c in enumerate(self.trainer.datamodule.classes)}
        size = self._shown[0][0].shape[-1]  # the square the images were resized to
        shown = [(image.permute(1, 2, 0).cpu().numpy(), detected, truth) for image, detected, truth in self._shown]
        images = [
            wandb.Image(
                picture,
                boxes={
                    "predictions": wandb_boxes(detected, "pred", size, classes),
                    "ground_truth": wandb_boxes(truth, "true", size, classes),
                },
            )
            for picture, detected, truth in shown
        ]
        run.log({"val/detections": images, "trainer/global_step": self.global_step})

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        classes, size = self.trainer.datamodule.classes, batch["images"].shape[-1]
        records = []
        for name, (width, height), found in zip(batch["name"], batch["size"], self.detect(batch)):
            path = Path(name)
            scale = torch.tensor([width / size, height / size] * 2)
            boxes = (found["boxes"].float().cpu() * scale).round(decimals=1)
            objects = [
                {"class": classes[int(c) - 1], "score": round(float(s), 4), "box": b.tolist()}
                for b, s, c in zip(boxes, found["scores"].cpu(), found["labels"].cpu())
            ]
            confident = [o for o in objects if o["score"] >= self.shown_score]
            summary = "; ".join(f"{o['class']} {o['score']:.2f} at {[round(v) for v in o['box']]}" for o in confident)
            records.append(
                {
                    "input": str(path),
                    "output": objects,
                    "drawn": str(self._draw(path, confident)),
                    "summary": summary or f"nothing above {self.shown_score}",
                }
            )
        return records

    def _draw(self, path: Path, objects: list[dict]) -> Path:
        """The image with its boxes drawn, as a PNG beside the run's predictions.jsonl."""
        from PIL import Image, ImageDraw

        from litlab.tracking import run_dir

        folder = run_dir(self.trainer) / "detections"
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            picture = image.convert("RGB")
        draw = ImageDraw.Draw(picture)
        for obj in objects:
            draw.rectangle(obj["box"], outline=(255, 0, 0), width=3)
            draw.text((obj["box"][0] + 3, obj["box"][1] + 2), f"{obj['class']} {obj['score']:.2f}", fill=(255, 0, 0))
        target = folder / f"{path.stem}.png"
        picture.save(target)
        return target


class FastRCNN(TorchvisionWeights, Detector):
    """Fast R-CNN: a torchvision ResNet's convolutional stages, RoIAlign (7x7 at the stride the features really
    have), two fully connected layers of `fc_dim` with ReLU and dropout, a classifier (classes + background) and
    class-specific box regression. Loss: cross-entropy (background weighted by `background_weight`) + smooth L1 on
    foreground RoIs.

    Args:
        arch, weights: torchvision ResNet and its ImageNet weights (None: from scratch); fetched for `fit` only.
        feature_stage: the last ResNet stage used ("layer3": stride 16, "layer4": stride 32).
        num_classes: object classes (without background).
        roi_size, fc_dim, dropout: the RoI head.
        background_weight: cross-entropy weight of the background class (the notebook used 0.2).
        score_threshold, nms_iou, detections_per_image: inference.
        optimizer, lr_scheduler: see `litlab.optim` (None: a constant rate).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | None = "IMAGENET1K_V2",
        feature_stage: str = "layer3",
        num_classes: PositiveInt = 3,
        roi_size: PositiveInt = 7,
        fc_dim: PositiveInt = 1024,
        dropout: ClosedUnitInterval = 0.3,
        background_weight: NonNegativeFloat = 1.0,
        score_threshold: ClosedUnitInterval = 0.05,
        nms_iou: ClosedUnitInterval = 0.3,
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
        self.classify = nn.Linear(fc_dim, num_classes + 1)
        self.regress = nn.Linear(fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.regress.weight, std=0.001)
        nn.init.zeros_(self.regress.bias)
        class_weights = torch.ones(num_classes + 1)
        class_weights[0] = background_weight
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.roi_acc = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self._metrics()

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
        num_classes: object classes (without background).
        image_size: the side images arrive at (the model's own resizing is set to keep it).
        trainable_backbone_layers: ResNet stages fine-tuned (0-5).
        optimizer, lr_scheduler: see `litlab.optim` (None: a constant rate).
    """

    def __init__(
        self,
        weights: str | None = "COCO_V1",
        num_classes: PositiveInt = 3,
        image_size: PositiveInt = 320,
        trainable_backbone_layers: NonNegativeInt = 3,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        self.choose_weights("fasterrcnn_resnet50_fpn_v2", weights, name="Faster R-CNN")
        if not 0 <= trainable_backbone_layers <= len(TRAINABLE_ORDER):
            raise LitlabError(f"--model.trainable_backbone_layers={trainable_backbone_layers}: between 0 and 5")
        self.net = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, min_size=image_size, max_size=image_size
        )
        if self.weights is not None:  # torchvision freezes nothing for a model built without weights: done here
            freeze_batchnorm(self.net)
            freeze_resnet_stages(self.net.backbone.body, trainable_backbone_layers)
        in_features = self.net.roi_heads.box_predictor.cls_score.in_features
        self.net.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)
        self._metrics()

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
