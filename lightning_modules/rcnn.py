"""R-CNN (notebook 15.6, the detector that came before Fast R-CNN): each region proposal is cut out of the image,
resized to the classifier's input and classified on its own; detection is every proposal's class scores and box
deltas, then per-class non-maximum suppression.

The notebook cut crops at thousands of anchor boxes (15.6.2-15.6.4), then at selective-search proposals (15.6.5);
`--data.proposals=anchors` or `fast` gives either. Everything but the features is Fast R-CNN's (`fast_rcnn.FastRCNN`):
the same data, proposals, RoI sampling and labelling (IoU >= 0.5 foreground, [0.1, 0.5) background first, so crops
holding part of a fruit are background), the same network (a ResNet to `feature_stage`, then the `RoIHead`'s two fully
connected layers, classification and box regression), loss, post-processing and mAP. Only where the features come from
differs: one convolutional pass per crop here, one per image shared by all its proposals in Fast R-CNN. That is the
comparison the notebook made in 15.7, in accuracy and in images per second.

    litlab fit --config configs/fruit_rcnn_scratch.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from lightning_modules.fast_rcnn import STRIDES, FastRCNN
from litlab.errors import LitlabError


class RCNN(FastRCNN):
    """Fast R-CNN's network applied to each proposal's crop: a crop of `roi_size` × stride pixels through the ResNet
    gives a `roi_size` square feature map, which the `RoIHead` pools whole (its RoI is the crop).

    Args:
        kwargs: as `FastRCNN` (arch, weights, feature_stage, roi_size, the head, sampling and inference).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crop_size = self.hparams.roi_size * STRIDES[self.hparams.feature_stage]
        if self.crop_size > 512:
            raise LitlabError(f"crops of {self.crop_size} px (roi_size × stride): lower --model.roi_size")

    def crops(self, images: Tensor, rois: Tensor) -> Tensor:
        """Each RoI (R, 5) of uint8 images (B, 3, S, S) cut out and resized to (R, 3, crop, crop), standardised."""
        pixels = self.standardize(images.float() / 255)
        boxes = rois.clone()
        boxes[:, 3:] += 1  # pixel-inclusive corners: the crop spans the last pixel too
        return roi_align(pixels, boxes, self.crop_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def forward(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (R, C+1) and box deltas (R, C+1, 4) of the RoIs (R, 5), each from its own crop."""
        features = self.backbone(self.crops(images, rois))  # (R, C, roi_size, roi_size)
        whole = rois.new_tensor([0, 0, self.crop_size, self.crop_size]).expand(len(rois), 4)
        index = torch.arange(len(rois), dtype=rois.dtype, device=rois.device)[:, None]
        return self.head(features, torch.cat([index, whole], dim=1))  # each crop's RoI is the whole crop
