"""Fast R-CNN's training regions: each training image's RoIs sampled afresh at every access (ground-truth boxes
always, a foreground share with IoU >= 0.5, the rest background), labelled by their best-matching box and given
normalised regression targets; the Dataset that holds a split's images, boxes and proposals as tensors."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_iou

from datamodules.detection_transforms import augment_detection
from litlab.box_coding import encode_boxes


def label_rois(rois: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per RoI: its best IoU with a ground-truth box, that box's label (0 when IoU < 0.5) and the box."""
    iou, best = box_iou(rois, boxes).max(dim=1)
    return iou, torch.where(iou >= 0.5, labels[best], 0), boxes[best]


def sample_rois(proposals: Tensor, boxes: Tensor, labels: Tensor, count: int, fg_fraction: float) -> Tensor:
    """`count` RoIs for one training image: the ground-truth boxes, then foreground proposals up to `fg_fraction`,
    then background (IoU in [0.1, 0.5), topped up from below 0.1). Torch's RNG, so seeded runs repeat."""
    candidates = torch.cat([boxes, proposals])
    iou, _, _ = label_rois(candidates, boxes, labels)
    fg = torch.nonzero(iou >= 0.5).flatten()
    fg = fg[fg >= len(boxes)]  # foreground proposals (the ground-truth boxes come first, always)
    fg = torch.cat([torch.arange(len(boxes)), fg[torch.randperm(len(fg))]])[: max(len(boxes), int(count * fg_fraction))]
    hard = torch.nonzero((iou < 0.5) & (iou >= 0.1)).flatten()
    easy = torch.nonzero(iou < 0.1).flatten()
    bg = torch.cat([hard[torch.randperm(len(hard))], easy[torch.randperm(len(easy))]])[: count - len(fg)]
    chosen = torch.cat([fg, bg])
    if len(chosen) < count:  # a small image with few proposals: repeat
        chosen = chosen[torch.randint(len(chosen), (count,))]
    return candidates[chosen]


class DetectionImages(Dataset):
    """Images held as one uint8 tensor with their boxes and proposals. A batch is `{"images": (B, 3, S, S) uint8,
    "boxes", "labels": lists of (G, 4) / (G,), "rois": (R, 5) batch index + box, "roi_labels": (R,),
    "roi_targets": (R, 4), "index": (B,)}`, for predict also "name" and "size" (the files' names and original
    (width, height)); training RoIs are sampled afresh at every access, evaluation RoIs are all
    of an image's proposals. With `augment`, each image is flipped, zoomed and colour-jittered with its boxes and
    proposals (`detection_transforms`) before its RoIs are sampled and labelled."""

    def __init__(
        self,
        images: Tensor,
        boxes: list[Tensor],
        labels: list[Tensor],
        proposals: list[Tensor] | None,
        rois_per_image: int = 0,
        fg_fraction: float = 0.25,
        augment: bool = False,
        scale_jitter: float = 0.0,
        colour_jitter: float = 0.0,
        names: list[str] | None = None,
        sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        self.images, self.boxes, self.labels, self.proposals = images, boxes, labels, proposals
        self.names, self.sizes = names, sizes  # predict: each file's name and original (width, height)
        self.rois_per_image, self.fg_fraction = rois_per_image, fg_fraction
        self.augment, self.scale_jitter, self.colour_jitter = augment, scale_jitter, colour_jitter

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> dict:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        all_boxes, all_labels = [self.boxes[i] for i in indices], [self.labels[i] for i in indices]
        all_proposals = None if self.proposals is None else [self.proposals[i] for i in indices]
        if self.augment:
            images = images.clone()
            for b in range(len(indices)):
                proposals = None if all_proposals is None else all_proposals[b]
                images[b], all_boxes[b], all_labels[b], proposals = augment_detection(
                    images[b], all_boxes[b], all_labels[b], proposals, self.scale_jitter, self.colour_jitter
                )
                if all_proposals is not None:
                    all_proposals[b] = proposals
        batch = {"images": images, "boxes": all_boxes, "labels": all_labels, "index": index}
        if self.names is not None:
            batch.update(name=[self.names[i] for i in indices], size=[self.sizes[i] for i in indices])
        if all_proposals is None:  # detectors with their own proposals
            return batch
        rois, roi_labels, roi_targets = [], [], []
        for b, (boxes, labels, proposals) in enumerate(zip(all_boxes, all_labels, all_proposals)):
            if self.rois_per_image:
                chosen = sample_rois(proposals, boxes, labels, self.rois_per_image, self.fg_fraction)
            else:
                chosen = proposals
            if len(boxes):
                _, target_labels, matched = label_rois(chosen, boxes, labels)
            else:  # predict: nothing to match
                target_labels, matched = torch.zeros(len(chosen), dtype=torch.long), chosen
            rois.append(torch.cat([torch.full((len(chosen), 1), float(b)), chosen], dim=1))
            roi_labels.append(target_labels)
            roi_targets.append(encode_boxes(chosen, matched))
        batch.update(rois=torch.cat(rois), roi_labels=torch.cat(roi_labels), roi_targets=torch.cat(roi_targets))
        return batch
