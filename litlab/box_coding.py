"""Fast R-CNN's box parameterisation, shared by the detection data (regression targets) and the detector (decoding):
a box relative to a region of interest as normalised (dx, dy, dw, dh), pixel-inclusive corners as in the original
Fast R-CNN."""

from __future__ import annotations

import torch
from torch import Tensor

BOX_MEANS = torch.tensor([0.0, 0.0, 0.0, 0.0])
BOX_STDS = torch.tensor([0.1, 0.1, 0.2, 0.2])  # the usual Fast R-CNN normalisation of (dx, dy, dw, dh)


def encode_boxes(rois: Tensor, boxes: Tensor) -> Tensor:
    """Normalised (dx, dy, dw, dh) that move `rois` (N, 4) onto `boxes` (N, 4)."""
    w, h = rois[:, 2] - rois[:, 0] + 1, rois[:, 3] - rois[:, 1] + 1
    gw, gh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    deltas = torch.stack(
        [
            (boxes[:, 0] + gw / 2 - rois[:, 0] - w / 2) / w,
            (boxes[:, 1] + gh / 2 - rois[:, 1] - h / 2) / h,
            torch.log(gw / w),
            torch.log(gh / h),
        ],
        dim=1,
    )
    return (deltas - BOX_MEANS.to(rois)) / BOX_STDS.to(rois)


def decode_boxes(rois: Tensor, deltas: Tensor) -> Tensor:
    """The boxes (..., 4) that normalised `deltas` (..., 4) make of `rois` (..., 4); inverse of `encode_boxes`."""
    d = deltas * BOX_STDS.to(deltas) + BOX_MEANS.to(deltas)
    w, h = rois[..., 2] - rois[..., 0] + 1, rois[..., 3] - rois[..., 1] + 1
    cx, cy = rois[..., 0] + w / 2 + d[..., 0] * w, rois[..., 1] + h / 2 + d[..., 1] * h
    nw, nh = w * torch.exp(d[..., 2].clamp(max=4.0)), h * torch.exp(d[..., 3].clamp(max=4.0))
    return torch.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2 - 1, cy + nh / 2 - 1], dim=-1)
