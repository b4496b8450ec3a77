"""Fast R-CNN's head over region proposals, the whole algorithm in one place (as torchvision's `RoIHeads`): the training
RoIs sampled among each image's proposals, matched to its ground-truth boxes and given box-regression targets; RoIAlign
at the features' stride, two fully connected layers, classification (classes + background) and class-specific box
regression; the loss; and detections decoded from the RoIs, with per-class non-maximum suppression.

Boxes are x1 y1 x2 y2 in pixels of the (square) network input, pixel-inclusive as in the original Fast R-CNN (a box's
width is x2 - x1 + 1). RoIs are (R, 5): the image's index in the batch, then its box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou, roi_align

BOX_STDS = (0.1, 0.1, 0.2, 0.2)  # the usual normalisation of the regression targets (dx, dy, dw, dh)


def encode_boxes(rois: Tensor, boxes: Tensor) -> Tensor:
    """Normalised (dx, dy, dw, dh) (N, 4) that move `rois` (N, 4) onto `boxes` (N, 4)."""
    w, h = rois[:, 2] - rois[:, 0] + 1, rois[:, 3] - rois[:, 1] + 1
    gw, gh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    dx, dy = (boxes[:, 0] + gw / 2 - rois[:, 0] - w / 2) / w, (boxes[:, 1] + gh / 2 - rois[:, 1] - h / 2) / h
    return torch.stack([dx, dy, torch.log(gw / w), torch.log(gh / h)], dim=1) / rois.new_tensor(BOX_STDS)


def decode_boxes(rois: Tensor, deltas: Tensor) -> Tensor:
    """The boxes (..., 4) that normalised `deltas` (..., 4) make of `rois` (..., 4); the inverse of `encode_boxes`."""
    d = deltas * deltas.new_tensor(BOX_STDS)
    w, h = rois[..., 2] - rois[..., 0] + 1, rois[..., 3] - rois[..., 1] + 1
    cx, cy = rois[..., 0] + w / 2 + d[..., 0] * w, rois[..., 1] + h / 2 + d[..., 1] * h
    nw, nh = w * torch.exp(d[..., 2].clamp(max=4.0)), h * torch.exp(d[..., 3].clamp(max=4.0))
    return torch.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2 - 1, cy + nh / 2 - 1], dim=-1)


def match(rois: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per RoI (N, 4): its best IoU with a ground-truth box, that box's label (0, background, below IoU 0.5) and the
    box; with no ground truth (predict), IoU 0, background, and the RoI itself."""
    if not len(boxes):
        return rois.new_zeros(len(rois)), labels.new_zeros(len(rois)), rois
    iou, best = box_iou(rois, boxes).max(dim=1)
    return iou, torch.where(iou >= 0.5, labels[best], 0), boxes[best]


def sample_rois(proposals: Tensor, boxes: Tensor, labels: Tensor, count: int, fg_fraction: float) -> Tensor:
    """`count` RoIs (count, 4) for one training image: its ground-truth boxes, then foreground proposals (IoU >= 0.5)
    up to `fg_fraction`, then background (IoU in [0.1, 0.5), topped up from below 0.1), repeated when too few. Drawn
    with torch's generator, so a seeded run repeats."""
    candidates = torch.cat([boxes, proposals])
    iou, _, _ = match(candidates, boxes, labels)
    fg = torch.nonzero(iou >= 0.5).flatten()
    fg = fg[fg >= len(boxes)]  # foreground proposals (the ground-truth boxes come first, always)
    fg = fg[torch.randperm(len(fg), device=fg.device)]
    fg = torch.cat([torch.arange(len(boxes), device=fg.device), fg])[: max(len(boxes), int(count * fg_fraction))]
    hard, easy = torch.nonzero((iou < 0.5) & (iou >= 0.1)).flatten(), torch.nonzero(iou < 0.1).flatten()
    bg = torch.cat(
        [hard[torch.randperm(len(hard), device=hard.device)], easy[torch.randperm(len(easy), device=easy.device)]]
    )
    chosen = torch.cat([fg, bg[: count - len(fg)]])
    if len(chosen) < count:  # a small image with few proposals
        chosen = chosen[torch.randint(len(chosen), (count,), device=chosen.device)]
    return candidates[chosen]


class RoIHead(nn.Module):
    """Fast R-CNN's detection head over backbone features (B, C, H/stride, W/stride).

    Args:
        channels, stride: the features' width and the input pixels per feature cell.
        num_classes: object classes (label 0 is background).
        roi_size, fc_dim, dropout: RoIAlign output size; the two fully connected layers and their dropout.
        background_weight: cross-entropy weight of the background class.
        rois_per_image, fg_fraction: training RoIs sampled per image and their foreground share.
        score_threshold, nms_iou, detections_per_image: detections kept above a score, after per-class NMS at an IoU.
    """

    def __init__(
        self, channels: int, stride: int, num_classes: int, roi_size: int = 7, fc_dim: int = 1024, dropout: float = 0.3,
        background_weight: float = 1.0, rois_per_image: int = 64, fg_fraction: float = 0.25,
        score_threshold: float = 0.05, nms_iou: float = 0.5, detections_per_image: int = 100,
    ) -> None:  # fmt: skip
        super().__init__()
        self.stride, self.roi_size, self.rois_per_image, self.fg_fraction = (
            stride,
            roi_size,
            rois_per_image,
            fg_fraction,
        )
        self.score_threshold, self.nms_iou, self.detections_per_image = score_threshold, nms_iou, detections_per_image
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * roi_size * roi_size, fc_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(fc_dim, fc_dim), nn.ReLU(), nn.Dropout(dropout),
        )  # fmt: skip
        self.classify = nn.Linear(fc_dim, num_classes + 1)
        self.regress = nn.Linear(fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.regress.weight, std=0.001)
        nn.init.zeros_(self.regress.bias)
        class_weights = torch.ones(num_classes + 1)
        class_weights[0] = background_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def rois(
        self, proposals: list[Tensor], boxes: list[Tensor], labels: list[Tensor], sample: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The RoIs of a batch (R, 5), their labels (R,) and regression targets (R, 4): `rois_per_image` sampled per
        image in training (`sample`), every proposal otherwise."""
        rois, roi_labels, targets = [], [], []
        for b, (found, truth, classes) in enumerate(zip(proposals, boxes, labels)):
            chosen = sample_rois(found, truth, classes, self.rois_per_image, self.fg_fraction) if sample else found
            _, matched_labels, matched = match(chosen, truth, classes)
            rois.append(torch.cat([chosen.new_full((len(chosen), 1), b), chosen], dim=1))
            roi_labels.append(matched_labels)
            targets.append(encode_boxes(chosen, matched))
        return torch.cat(rois), torch.cat(roi_labels), torch.cat(targets)

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (R, classes + 1) and box deltas (R, classes + 1, 4) of the RoIs (R, 5)."""
        pooled = roi_align(features, rois, self.roi_size, spatial_scale=1 / self.stride, sampling_ratio=2, aligned=True)
        hidden = self.fc(pooled)  # (R, fc_dim) from (R, C, roi_size, roi_size)
        return self.classify(hidden), self.regress(hidden).view(len(rois), -1, 4)

    def loss(self, logits: Tensor, deltas: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy over the RoIs + smooth L1 of the foreground RoIs' own class deltas, per RoI."""
        classification = F.cross_entropy(logits, labels, weight=self.class_weights)
        own = deltas[torch.arange(len(labels), device=labels.device), labels]  # (R, 4): each RoI's own class
        foreground = labels > 0
        regression = F.smooth_l1_loss(own[foreground], targets[foreground], beta=1 / 9, reduction="sum")
        return classification + regression / max(1, len(labels))

    def detections(self, logits: Tensor, deltas: Tensor, rois: Tensor, images: int, size: int) -> list[dict]:
        """Per image: `boxes` decoded per class and clipped to the `size` square, their `scores` above the threshold
        and `labels` (1-based), after per-class NMS, best first."""
        scores = logits.float().softmax(1)[:, 1:]  # (R, C) without background
        boxes = decode_boxes(rois[:, None, 1:], deltas[:, 1:].float()).clamp(0, size - 1)  # (R, C, 4)
        image = rois[:, 0].long()[:, None].expand_as(scores)
        labels = torch.arange(1, scores.size(1) + 1, device=scores.device).expand_as(scores)
        keep = scores > self.score_threshold
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        keep = batched_nms(boxes, scores, labels + image * logits.size(1), self.nms_iou)  # per (image, class)
        found = []
        for b in range(images):
            mine = keep[image[keep] == b][: self.detections_per_image]  # batched_nms keeps by decreasing score
            found.append({"boxes": boxes[mine], "scores": scores[mine], "labels": labels[mine]})
        return found
