"""What the image-classification datasets share: uint8 image tensors held whole in memory (on the GPU when training
there), augmentation of each training batch on the device it trains on, and image files for `litlab predict`.

Images stay uint8 `(N, C, H, W)` until they reach the training device (4x less memory and transfer than float);
`on_after_batch_transfer` turns a batch into floats in [0, 1] and augments training batches there, all images of a
batch in a few tensor operations (the notebook looped over images in Python). Networks standardise their own inputs,
so a checkpoint predicts on raw images without knowing the dataset's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from datamodules.data_module import Strings
from datamodules.in_memory import Columns, InMemoryDataModule
from litlab.errors import LitlabError


def augment_batch(
    x: Tensor,
    flip: float = 0.5,
    shift: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
    contrast: tuple[float, float] = (1.0, 1.0),
    padding_mode: str = "zeros",
    erase: float = 0.0,
) -> Tensor:
    """Random horizontal flip, translation by whole pixels, zoom, contrast and erasing, drawn per image, for a float
    batch (B, C, H, W) in [0, 1]. Flips and shifts alone are one gather of the batch's pixels (exact, and several times
    faster than resampling on a CPU); a zoom makes it one affine resampling. Borders: zeros, or the image reflected
    about its edge ("reflection"). With probability `erase`, a rectangle of 2-25 % of the image (aspect ratio 0.3-3.3)
    is set to 0 (random erasing, Zhong et al. 2017)."""
    b, _, h, w = x.shape
    u = torch.rand(b, 4, device=x.device)  # (B, 4)
    mirror = u[:, 0] < flip
    zoom = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    pixels = torch.randint(-shift, shift + 1, (b, 2), device=x.device)  # (B, 2) whole-pixel moves
    if tuple(scale) == (1.0, 1.0):
        x = move_by_pixels(x, mirror, pixels, padding_mode)
    else:
        theta = torch.zeros(b, 2, 3, device=x.device)  # output -> input coordinates in [-1, 1]
        theta[:, 0, 0] = torch.where(mirror, -1.0, 1.0) / zoom
        theta[:, 1, 1] = 1 / zoom
        theta[:, 0, 2] = pixels[:, 0] * (2 / w)
        theta[:, 1, 2] = pixels[:, 1] * (2 / h)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if tuple(contrast) != (1.0, 1.0):  # blend with each image's mean grey level, as torchvision's adjust_contrast
        factor = (contrast[0] + (contrast[1] - contrast[0]) * u[:, 2]).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (mean + factor * (x - mean)).clamp(0, 1)
    if erase > 0:
        x = x * ~random_rectangles(b, h, w, u[:, 3] < erase)[:, None]
    return x


def check_augmentation(
    translate: int | None, zoom: tuple[float, float] | None, contrast: tuple[float, float] | None, size: tuple[int, int]
) -> None:
    """One line for augmentation settings outside their meaning: a shift that moves an image out of its frame, a zoom
    or contrast range that is empty, reversed, or holds a factor of 0 or less (a negative zoom mirrors and shrinks the
    image to almost nothing)."""
    if translate is not None and translate >= min(size):
        raise LitlabError(
            f"--data.translate={translate}: shifts must stay below the image's {min(size)} pixels (a few is usual)"
        )
    for name, pair in (("zoom", zoom), ("contrast", contrast)):
        if pair is not None and not (len(pair) == 2 and 0 < pair[0] <= pair[1]):
            raise LitlabError(f"--data.{name}={list(pair)}: give [low, high] with 0 < low <= high (1: unchanged)")


def random_rectangles(n: int, h: int, w: int, chosen: Tensor) -> Tensor:
    """(N, H, W) masks, True inside one random rectangle per chosen image (2-25 % of the area, aspect 0.3-3.3)."""
    r = torch.rand(n, 4, device=chosen.device)
    area = h * w * (0.02 + 0.23 * r[:, 0])
    aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * r[:, 1])
    height = (area * aspect).sqrt().clamp(1, h).floor()
    width = (area / aspect).sqrt().clamp(1, w).floor()
    top, left = ((h - height + 1) * r[:, 2]).floor(), ((w - width + 1) * r[:, 3]).floor()
    rows = torch.arange(h, device=chosen.device)[None, :, None]  # (1, H, 1)
    columns = torch.arange(w, device=chosen.device)[None, None, :]  # (1, 1, W)
    inside = (rows >= top[:, None, None]) & (rows < (top + height)[:, None, None])
    inside = inside & (columns >= left[:, None, None]) & (columns < (left + width)[:, None, None])
    return inside & chosen[:, None, None]


def move_by_pixels(x: Tensor, mirror: Tensor, pixels: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Each image of (B, C, H, W) mirrored where `mirror` (B,) is set, then moved by `pixels` (B, 2: x, y): output
    pixel (i, j) is input pixel (i + dy, j' + dx), j' the mirrored column, as `grid_sample` would resample it."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + pixels[:, 1:]  # (B, H) input row of each output row
    columns = torch.arange(w, device=x.device).expand(b, w)
    columns = torch.where(mirror[:, None], columns.flip(1), columns) + pixels[:, :1]  # (B, W)
    if padding_mode == "reflection":  # about the edge: -1 -> 0, w -> w - 1
        rows = torch.where(rows < 0, -rows - 1, torch.where(rows >= h, 2 * h - 1 - rows, rows))
        columns = torch.where(columns < 0, -columns - 1, torch.where(columns >= w, 2 * w - 1 - columns, columns))
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((columns >= 0) & (columns < w))[:, None, :]  # (B, H, W)
        rows, columns = rows.clamp(0, h - 1), columns.clamp(0, w - 1)
    images = torch.arange(b, device=x.device)[:, None, None, None]
    out = x[
        images, torch.arange(c, device=x.device)[None, :, None, None], rows[:, None, :, None], columns[:, None, None]
    ]
    return out if inside is None else out * inside[:, None]


@contextmanager
def predict_file_errors(path: Path) -> Iterator[None]:
    """A predict image that is missing or that PIL cannot read becomes one line naming it."""
    try:
        yield
    except FileNotFoundError:
        raise LitlabError(f"--data.predict_files: {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise LitlabError(f"--data.predict_files: {path} is not an image PIL can read ({err})") from None
    except Image.DecompressionBombError as err:  # not an OSError: PIL's guard against huge images
        raise LitlabError(f"--data.predict_files: {path} is too large to decode ({err})") from None


def read_images(paths: list[Path], channels: int, size: tuple[int, int]) -> Tensor:
    """uint8 (N, C, H, W) from image files of any size and mode (resized to the training size); one clear error for a
    file that is missing or not an image."""
    mode = {1: "L", 3: "RGB"}[channels]
    images = []
    for path in paths:
        with predict_file_errors(path), Image.open(path) as image:
            image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            images.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8))
    return torch.stack(images).view(len(paths), size[0], size[1], channels).permute(0, 3, 1, 2).contiguous()


class ImageClassData(InMemoryDataModule):
    """Base of the image-classification datasets: subclasses set `classes`, `channels`, `size`, `augmentation` (the
    keyword arguments of `augment_batch`) and implement `load(train)`.

    Splits: val is `val_size` images of the official training set drawn with a seeded generator, train the rest; test
    is the official test set. Batches are `{"x": (B, C, H, W) float in [0, 1], "y": (B,)}`; predict batches also
    carry the files' names (`name`). What a model may read (`Experiment.from_data`): `classes`, `num_classes`.
    """

    classes: ClassVar[tuple[str, ...]]
    channels: ClassVar[int]
    size: ClassVar[tuple[int, int]]
    augmentation: ClassVar[dict]

    def __init__(
        self,
        data_dir: Path = Path("data"),
        download: bool = True,
        val_size: PositiveInt = 5_000,
        seed: int = 0,
        train_on_val: bool = False,
        augment: bool = False,
        translate: NonNegativeInt | None = None,
        zoom: tuple[float, float] | None = None,
        contrast: tuple[float, float] | None = None,
        erase: ClosedUnitInterval | None = None,
        predict_files: Strings | None = None,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = 1024,
        data_on_device: bool | None = None,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        """
        Args:
            data_dir: where the dataset's files are (or are downloaded to by `prepare_data`).
            download: fetch the files when missing (else a missing dataset is an error that says where it looked).
            val_size: validation images taken from the official training set.
            seed: seeds the train/val split.
            train_on_val: train on the whole official training set, val images included, once a recipe has been
                chosen on the val split (as published figures train). val/acc then reads images the model trained
                on: test `last.ckpt`, not `best.ckpt`.
            augment: augment training batches on the device (`augmentation`).
            translate, zoom, contrast, erase: override the dataset's own `augmentation`: the largest random shift in
                pixels, the range of zoom factors and of contrast factors ([1, 1]: none), the probability of erasing a
                random rectangle.
            predict_files: images to classify with `litlab predict` (any size and mode; converted and resized).
            batch_size, eval_batch_size, data_on_device, num_workers: see `InMemoryDataModule`.
        """
        super().__init__(batch_size, eval_batch_size, data_on_device, num_workers)
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size = val_size
        self.seed = seed
        self.train_on_val = train_on_val
        self.augment = augment
        check_augmentation(translate, zoom, contrast, self.size)
        chosen = {"shift": translate, "scale": zoom, "contrast": contrast, "erase": erase}
        self.augment_with = {**self.augmentation, **{k: v for k, v in chosen.items() if v is not None}}
        self.predict_files = [Path(p) for p in predict_files or []]
        self._official: dict[bool, tuple[Tensor, Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The official training (or test) set: uint8 images (N, C, H, W) and int64 labels (N,)."""
        raise NotImplementedError

    def _official_set(self, train: bool) -> tuple[Tensor, Tensor]:
        if train not in self._official:
            images, labels = self.load(train)
            if images.dtype != torch.uint8 or images.shape[1:] != (self.channels, *self.size):
                raise LitlabError(
                    f"{self.data_dir}: images of {tuple(images.shape[1:])}, expected uint8 images of "
                    f"{(self.channels, *self.size)}"
                )
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise LitlabError(f"{self.data_dir}: labels outside 0..{self.num_classes - 1}")
            self._official[train] = images, labels
        return self._official[train]

    def make_split(self, split: str) -> Columns:
        if split == "predict":
            if not self.predict_files:
                raise LitlabError("nothing to predict: pass --data.predict_files '[photo.png, shirt.jpg]'")
            images = read_images(self.predict_files, self.channels, self.size)
            return {"x": images, "index": torch.arange(len(images)), "name": [str(p) for p in self.predict_files]}
        if split == "test":
            images, labels = self._official_set(train=False)
            return {"x": images, "y": labels}
        images, labels = self._official_set(train=True)
        if not 0 < self.val_size < len(images):
            raise LitlabError(f"--data.val_size={self.val_size}: must be between 1 and {len(images) - 1}")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        first_train = 0 if self.train_on_val else self.val_size
        chosen = order[: self.val_size] if split == "val" else order[first_train:]
        return {"x": images[chosen], "y": labels[chosen]}

    def on_after_batch_transfer(self, batch: Columns, dataloader_idx: int) -> Columns:
        x = batch["x"].float().div_(255)  # (B, C, H, W) in [0, 1], on the training device
        if self.augment and self.trainer is not None and self.trainer.training:
            x = augment_batch(x, **self.augment_with)
        return {**batch, "x": x}
