"""Reading a VOC-format detection folder: `*.xml` annotations beside the images. Every image mode (RGBA, palette,
grey) becomes RGB; problems are handled per case:

- a missing or malformed XML, or an image PIL cannot read: the image is skipped, with a warning naming the file;
- an object of a class not in `classes`: an error naming the file and the class (never a silent wrong label);
- a box reaching outside the image: clipped to it, with a warning; a box of zero area (after clipping): dropped, with
  a warning; an image left without boxes: skipped.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from litlab.errors import LitlabError


def parse_voc(xml: Path, classes: tuple[str, ...]) -> tuple[Tensor, Tensor] | None:
    """(boxes (G, 4) x1 y1 x2 y2 in pixels, labels (G,) 1-based) of a VOC file; None (with a warning) when it is
    missing or malformed; a `LitlabError` for a class outside `classes`."""
    try:
        root = ET.parse(xml).getroot()
        boxes, labels = [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip().lower()
            if name not in classes:
                raise LitlabError(f"{xml}: object class {name!r} is not one of {list(classes)} (--data.classes)")
            box = obj.find("bndbox")
            boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(classes.index(name) + 1)
    except FileNotFoundError:
        warnings.warn(f"skipping {xml.with_suffix('.jpg').name}: no annotation file {xml.name}", stacklevel=2)
        return None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        warnings.warn(f"skipping {xml}: malformed VOC annotation ({err})", stacklevel=2)
        return None
    return torch.tensor(boxes, dtype=torch.float).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def valid_boxes(boxes: Tensor, labels: Tensor, width: int, height: int, name: str) -> tuple[Tensor, Tensor]:
    """Boxes clipped to the image (warned), zero-area ones dropped (warned)."""
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    if not torch.equal(clipped, boxes):
        warnings.warn(f"{name}: a box reaches outside the {width}x{height} image; clipped", stacklevel=2)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if not keep.all():
        warnings.warn(f"{name}: {int((~keep).sum())} box(es) of zero area dropped", stacklevel=2)
    return clipped[keep], labels[keep]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels shown over white as a viewer shows them (the Kaggle fruit set has RGBA and
    palette images whose hidden pixels are black in some files and white in others)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: Path, size: int) -> tuple[Tensor, tuple[int, int]]:
    """uint8 (3, size, size) RGB and the original (width, height), whatever the file's mode or size (a JPEG of
    several thousand pixels is decoded at a reduced scale first)."""
    with Image.open(path) as image:
        original = image.size
        image.draft("RGB", (size, size))
        rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return pixels.permute(2, 0, 1).contiguous(), original


VocFolder = tuple[list[Tensor], list[Tensor], list[Tensor]]  # images, boxes, labels


def read_voc_folder(folder: Path, size: int, classes: tuple[str, ...]) -> VocFolder:
    """Images resized to `size` square, boxes (in resized pixels) and labels of every annotated image in `folder`;
    says how many were read and skipped, and why. Boxes are scaled by the image's real size, never by the XML's
    `<size>` (0 x 0 in 37 Kaggle files)."""
    images, all_boxes, all_labels, skipped = [], [], [], Counter()
    classes = tuple(c.lower() for c in classes)
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        annotation = parse_voc(path.with_suffix(".xml"), classes)
        if annotation is None:
            skipped["no readable VOC annotation"] += 1
            continue
        try:
            image, (width, height) = read_image(path, size)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            warnings.warn(f"skipping {path}: not an image PIL can read ({err})", stacklevel=2)
            skipped["unreadable image"] += 1
            continue
        boxes, labels = valid_boxes(*annotation, width, height, str(path))
        if not len(boxes):
            warnings.warn(f"skipping {path}: no valid boxes", stacklevel=2)
            skipped["no valid boxes"] += 1
            continue
        scale = torch.tensor([size / width, size / height] * 2)
        images.append(image)
        all_boxes.append(boxes * scale)
        all_labels.append(labels)
    why = f" ({', '.join(f'{n} {reason}' for reason, n in skipped.items())})" if skipped else ""
    rank_zero_info(
        f"{folder}: {len(images)} images with {sum(map(len, all_boxes))} boxes read, "
        f"{sum(skipped.values())} skipped{why}"
    )
    return images, all_boxes, all_labels
