"""Training augmentation for detection: a horizontal flip, a zoom in or out (scale jitter) and colour jitter, applied
to one image together with its boxes and region proposals, so that proposals are labelled against the moved boxes.

Images are uint8 (3, S, S); boxes are x1 y1 x2 y2 in pixel-index coordinates (a box's width is x2 - x1 + 1, as
`encode_boxes` counts). Random numbers come from torch's generator, so seeded runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_VISIBLE = 0.4  # a ground-truth box cut by a zoomed-in crop stays an object while this share of it is visible


def flip_boxes(boxes: Tensor, size: int) -> Tensor:
    """Boxes (N, 4) of a mirrored image of width `size`."""
    return torch.stack([size - 1 - boxes[:, 2], boxes[:, 1], size - 1 - boxes[:, 0], boxes[:, 3]], dim=1)


def area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def zoom(image: Tensor, factor: float, offset: tuple[int, int]) -> tuple[Tensor, float, Tensor]:
    """The image scaled by `factor` and cut (factor > 1) or framed in its mean colour (factor < 1) back to its size,
    its top-left corner at `offset` (x, y) of the scaled image; and the ratio and shift that move boxes alike
    (`boxes * ratio - shift`)."""
    size = image.shape[-1]
    scaled = round(size * factor)
    pixels = F.interpolate(image[None].float(), size=(scaled, scaled), mode="bilinear", antialias=factor < 1)[0]
    x, y = offset
    if factor >= 1:  # cut a size x size window out of the larger image
        out = pixels[:, y : y + size, x : x + size]
    else:  # place the smaller image on a canvas
        out = pixels.mean(dim=(1, 2), keepdim=True).expand(3, size, size).clone()
        out[:, -y : -y + scaled, -x : -x + scaled] = pixels
    return out.round().clamp(0, 255).to(torch.uint8), scaled / size, torch.tensor([x, y, x, y], dtype=torch.float)


def jitter_colour(image: Tensor, strength: float) -> Tensor:
    """Brightness, contrast and saturation each scaled by a factor drawn from [1 - strength, 1 + strength]."""
    brightness, contrast, saturation = (1 + strength * (2 * torch.rand(3) - 1)).tolist()
    x = image.float() * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return ((x - grey) * saturation + grey).round().clamp(0, 255).to(torch.uint8)


def augment_detection(
    image: Tensor, boxes: Tensor, labels: Tensor, proposals: Tensor | None, scale_jitter: float, colour_jitter: float
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """A random flip (p = 0.5), a zoom by a factor drawn log-uniformly from [1 / (1 + scale_jitter), 1 + scale_jitter]
    at a random position, and colour jitter. Boxes and proposals are clipped to the image; ground-truth boxes left
    less than `MIN_VISIBLE` visible and proposals thinner than 2 px are dropped; a zoom that would leave no object is
    not applied."""
    size = image.shape[-1]
    if torch.rand(()) < 0.5:
        image, boxes = image.flip(-1), flip_boxes(boxes, size)
        proposals = None if proposals is None else flip_boxes(proposals, size)
    if scale_jitter > 0:
        factor = math.exp(math.log1p(scale_jitter) * (2 * float(torch.rand(())) - 1))
        room = abs(round(size * factor) - size)
        offset = tuple(int(v) for v in torch.randint(0, room + 1, (2,)))
        if factor < 1:
            offset = (-offset[0], -offset[1])  # where the smaller image sits on the canvas, as a negative cut
        zoomed, ratio, shift = zoom(image, factor, offset)
        moved = boxes * ratio - shift
        clipped = moved.clamp(0, size - 1)
        visible = area(clipped) >= MIN_VISIBLE * area(moved)
        if visible.any():
            image, boxes, labels = zoomed, clipped[visible], labels[visible]
            if proposals is not None:
                proposals = (proposals * ratio - shift).clamp(0, size - 1)
                wide, tall = proposals[:, 2] - proposals[:, 0] >= 2, proposals[:, 3] - proposals[:, 1] >= 2
                proposals = proposals[wide & tall]
    if colour_jitter > 0:
        image = jitter_colour(image, colour_jitter)
    return image, boxes, labels, proposals
