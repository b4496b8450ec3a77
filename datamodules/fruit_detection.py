"""Object detection on a VOC-format fruit dataset (notebook 15.6-15.7; on Kaggle as
`mbkinaci/fruit-images-for-object-detection`: apple / banana / orange, 240 train and 60 test images, a VOC XML beside
each JPEG).

`data_dir` holds `train/` and `test/` with `*.jpg` + `*.xml`; when it does not and `kagglehub` is installed and
configured, `prepare_data` downloads the Kaggle dataset. Images of any mode (RGBA, palette, grey) become RGB, are
resized to `image_size` square and held as one uint8 tensor; boxes scale with them. Annotation problems, per case:

- a missing or malformed XML, or an image PIL cannot read: the image is skipped, with a warning naming the file;
- an object of a class not in `classes`: an error naming the file and the class (never a silent wrong label);
- a box reaching outside the image: clipped to it, with a warning; a box of zero area (after clipping): dropped, with
  a warning; an image left without boxes: skipped.

Region proposals (Fast R-CNN): OpenCV selective search on the resized image, plus the notebook's border and grid boxes,
computed once per image in `prepare_data` and cached on disk under `cache_dir`, keyed by the image's pixels and the
search parameters, written atomically (numpy files, no pickle). Training batches hold several images, each with
`rois_per_image` sampled proposals: ground-truth boxes always, `fg_fraction` foreground (IoU >= 0.5), the rest
background (IoU in [0.1, 0.5), or below 0.1 when too few), with normalised regression targets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import box_iou

from datamodules.detection_transforms import augment_detection
from datamodules.images import predict_file_errors
from datamodules.in_memory import keep_batch
from lightning_modules.errors import LitlabError

KAGGLE_DATASET = "mbkinaci/fruit-images-for-object-detection"
BOX_MEANS = torch.tensor([0.0, 0.0, 0.0, 0.0])
BOX_STDS = torch.tensor([0.1, 0.1, 0.2, 0.2])  # the usual Fast R-CNN normalisation of (dx, dy, dw, dh)


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


def extra_boxes(size: int) -> Tensor:
    """The notebook's additions to selective search: the whole image, its halves and a 3x3 grid of cells."""
    s, h, t = size - 1, size / 2, size / 3
    boxes = [[0, 0, s, s], [0, 0, h, s], [h, 0, s, s], [0, 0, s, h], [0, h, s, s]]
    boxes += [[i * t, j * t, (i + 1) * t, (j + 1) * t] for i in range(3) for j in range(3)]
    return torch.tensor(boxes, dtype=torch.float)


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
    "roi_targets": (R, 4), "index": (B,)}`; training RoIs are sampled afresh at every access, evaluation RoIs are all
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
    ) -> None:
        self.images, self.boxes, self.labels, self.proposals = images, boxes, labels, proposals
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


class FruitDetectionData(L.LightningDataModule):
    """The fruit dataset (or any VOC folder pair `train/`, `test/`) as batches of images with boxes and RoIs.

    Args:
        data_dir: the folder holding `train/` and `test/` (searched one and two levels down too, as Kaggle unpacks).
        download: fetch the Kaggle dataset with `kagglehub` in `prepare_data` when the folders are missing.
        classes: object class names (label i+1; 0 is background).
        image_size: images are resized to this square.
        val_size: training images held out for validation (seeded).
        seed: the generator of the val split.
        proposals: compute selective-search proposals ("fast" or "quality" mode), or "none" for detectors that
            propose their own (Faster R-CNN).
        max_proposals: selective-search boxes kept per image (before the border and grid boxes).
        cache_dir: proposal cache (default: `<data_dir>/proposals`).
        rois_per_image, fg_fraction: RoIs sampled per training image, and the foreground share.
        augment: flip training images (p = 0.5) with their boxes and proposals; with `scale_jitter` > 0, zoom them
            in or out by up to 1 + scale_jitter; with `colour_jitter` > 0, scale brightness, contrast and saturation
            by up to that fraction.
        batch_size, eval_batch_size, num_workers: loader settings.
        predict_files: images to detect objects in with `litlab predict`.
    """

    def __init__(
        self,
        data_dir: Path = Path("data/fruit"),
        download: bool = True,
        classes: tuple[str, ...] = ("apple", "banana", "orange"),
        image_size: int = 320,
        val_size: int = 30,
        seed: int = 42,
        proposals: str = "fast",
        max_proposals: int = 1000,
        cache_dir: Path | None = None,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        augment: bool = False,
        scale_jitter: float = 0.0,
        colour_jitter: float = 0.0,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        predict_files: list[Path] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.splits: dict[str, DetectionImages] = {}
        self._folder_contents: dict[Path, tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
        self.predict_sizes: list[tuple[int, int]] = []

    @property
    def num_classes(self) -> int:
        return len(self.hparams.classes)

    def _folders(self) -> tuple[Path, Path] | None:
        """`train/` and `test/` with VOC files, in `data_dir` or up to two levels down (Kaggle unpacks them into
        `train_zip/train` and `test_zip/test`)."""
        root = Path(self.hparams.data_dir).expanduser()

        def find(name: str) -> Path | None:
            candidates = [root / name, *sorted(root.glob(f"*/{name}")), *sorted(root.glob(f"*/*/{name}"))]
            return next((d for d in candidates if d.is_dir() and any(d.glob("*.xml"))), None)

        train, test = find("train"), find("test")
        return (train, test) if train and test else None

    def prepare_data(self) -> None:
        if self._folders() is None and self.hparams.download:
            try:
                import kagglehub
            except ImportError:
                pass  # setup says where it looked and how to get the data
            else:
                try:
                    path = kagglehub.dataset_download(KAGGLE_DATASET)
                except Exception as err:  # kagglehub raises its own types for auth and network failures
                    raise LitlabError(f"kagglehub could not download {KAGGLE_DATASET} ({str(err)[:120]})") from None
                # into data_dir, where every rank looks (prepare_data runs on one process per node: state set here
                # would not reach the others)
                shutil.copytree(path, Path(self.hparams.data_dir).expanduser(), dirs_exist_ok=True)
        if self.hparams.proposals != "none" and (folders := self._folders()) is not None:
            cache = self._cache()
            for folder in folders:  # rank 0 fills the proposal cache once
                for image in self._read(folder)[0]:
                    cache.get(image)

    def _cache(self) -> ProposalCache:
        folder = self.hparams.cache_dir or Path(self.hparams.data_dir) / "proposals"
        return ProposalCache(Path(folder), self.hparams.proposals, self.hparams.max_proposals)

    def _read(self, folder: Path) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Images, boxes (in resized pixels) and labels of one folder, read once per process (prepare_data and setup
        both need them); says how many were read and skipped, and why. Boxes are scaled by the image's real size,
        never by the XML's `<size>` (0 x 0 in 37 Kaggle files)."""
        if folder not in self._folder_contents:
            self._folder_contents[folder] = self._read_folder(folder)
        return self._folder_contents[folder]

    def _read_folder(self, folder: Path) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        images, all_boxes, all_labels, skipped = [], [], [], Counter()
        size, classes = self.hparams.image_size, tuple(c.lower() for c in self.hparams.classes)
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            annotation = parse_voc(path.with_suffix(".xml"), classes)
            if annotation is None:
                skipped["no readable VOC annotation"] += 1
                continue
            try:
                image, (width, height) = read_image(path, size)
            except (UnidentifiedImageError, OSError) as err:
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

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.splits:
            return
        folders = self._folders()
        if folders is None:
            raise LitlabError(
                f"no VOC train/ and test/ folders with .xml files under {self.hparams.data_dir}: pass --data.data_dir "
                f"to the extracted https://www.kaggle.com/datasets/{KAGGLE_DATASET}, or install and configure kagglehub"
            )
        hp = self.hparams
        train, test = self._read(folders[0]), self._read(folders[1])
        if not 0 < hp.val_size < len(train[0]):
            raise LitlabError(f"--data.val_size={hp.val_size}: must be between 1 and {len(train[0]) - 1}")
        order = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(hp.seed)).tolist()
        parts = {"val": order[: hp.val_size], "train": order[hp.val_size :]}
        cache = self._cache() if hp.proposals != "none" else None
        for split, (images, boxes, labels), ids in [
            ("train", train, parts["train"]),
            ("val", train, parts["val"]),
            ("test", test, range(len(test[0]))),
        ]:
            chosen = [images[i] for i in ids]
            proposals = [cache.get(image) for image in chosen] if cache else None
            self.splits[split] = DetectionImages(
                torch.stack(chosen),
                [boxes[i] for i in ids],
                [labels[i] for i in ids],
                proposals,
                hp.rois_per_image if split == "train" else 0,
                hp.fg_fraction,
                augment=hp.augment and split == "train",
                scale_jitter=hp.scale_jitter,
                colour_jitter=hp.colour_jitter,
            )
        self._folder_contents.clear()  # held by the splits now

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        hp = self.hparams
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if train else hp.eval_batch_size or hp.batch_size,
            shuffle=train,
            collate_fn=keep_batch,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            pin_memory=on_gpu,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["test"], train=False)

    def predict_dataloader(self) -> DataLoader:
        files = [Path(f) for f in self.hparams.predict_files or []]
        if not files:
            raise LitlabError("nothing to predict: pass --data.predict_files '[photo.jpg]'")
        images, self.predict_sizes = [], []
        for path in files:
            with predict_file_errors(path):
                image, original = read_image(path, self.hparams.image_size)
            images.append(image)
            self.predict_sizes.append(original)
        empty = [torch.zeros(0, 4)] * len(files)
        cache = self._cache() if self.hparams.proposals != "none" else None
        proposals = [cache.get(image) for image in images] if cache else None
        no_labels = [torch.zeros(0, dtype=torch.long)] * len(files)
        dataset = DetectionImages(torch.stack(images), empty, no_labels, proposals)
        return self._loader(dataset, train=False)
