"""Region proposals for the R-CNN family: OpenCV's selective search on the resized image plus the notebook's border and
grid boxes, cached on disk per image, keyed by its pixels and the search parameters, written atomically (numpy files,
no pickle); or the notebook's anchor boxes (15.6), the same for every image."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def extra_boxes(size: int) -> Tensor:
    """The notebook's additions to selective search: the whole image, its halves and a 3x3 grid of cells."""
    s, h, t = size - 1, size / 2, size / 3
    boxes = [[0, 0, s, s], [0, 0, h, s], [h, 0, s, s], [0, 0, s, h], [0, h, s, s]]
    boxes += [[i * t, j * t, (i + 1) * t, (j + 1) * t] for i in range(3) for j in range(3)]
    return torch.tensor(boxes, dtype=torch.float)


def anchor_boxes(size: int, step: int) -> Tensor:
    """The notebook's anchors (15.6.2) on a `size` square: every box whose sides are multiples of `step` (step, 2 step,
    ..., up to the image) at every position on a `step` grid where it fits; (M², 4) for M = n (n + 1) / 2, n = size //
    step (1,296 at 256 px and step 32). Pixel-inclusive x1 y1 x2 y2, as the other proposals."""
    n = size // step
    start, side = torch.meshgrid(torch.arange(n) * step, torch.arange(1, n + 1) * step, indexing="ij")
    fits = start + side <= size
    low, high = start[fits], (start + side - 1)[fits]  # (M,) the intervals along one axis
    ix, iy = torch.meshgrid(torch.arange(len(low)), torch.arange(len(low)), indexing="ij")
    ix, iy = ix.flatten(), iy.flatten()
    return torch.stack([low[ix], low[iy], high[ix], high[iy]], dim=1).float()


def selective_search(image: Tensor, mode: str, max_boxes: int) -> Tensor:
    """(K, 4) x1 y1 x2 y2 boxes from OpenCV's selective search on a uint8 (3, H, W) image."""
    import cv2

    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image.permute(1, 2, 0).numpy()[:, :, ::-1]))  # RGB -> BGR
    search.switchToSelectiveSearchFast() if mode == "fast" else search.switchToSelectiveSearchQuality()
    rects = torch.from_numpy(search.process()[:max_boxes].astype(np.float32)).reshape(-1, 4)  # x, y, w, h
    return torch.cat([rects[:, :2], rects[:, :2] + rects[:, 2:] - 1], dim=1)


class ProposalCache:
    """Proposals per image on disk: `<folder>/<sha1 of pixels and parameters>.npy`, written atomically."""

    def __init__(self, folder: Path, mode: str, max_boxes: int) -> None:
        self.folder, self.mode, self.max_boxes = folder, mode, max_boxes

    def path(self, image: Tensor) -> Path:
        key = hashlib.sha1(image.numpy().tobytes())
        key.update(f"{self.mode}/{self.max_boxes}/{tuple(image.shape)}".encode())
        return self.folder / f"{key.hexdigest()}.npy"

    def get(self, image: Tensor) -> Tensor:
        path = self.path(image)
        if path.is_file():
            return torch.from_numpy(np.load(path, allow_pickle=False))
        boxes = torch.cat([selective_search(image, self.mode, self.max_boxes), extra_boxes(image.shape[-1])])
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with partial.open("wb") as file:
            np.save(file, boxes.numpy(), allow_pickle=False)
        partial.replace(path)
        return boxes
