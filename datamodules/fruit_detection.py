"""Object detection on a VOC-format fruit dataset (notebook 15.6-15.7; on Kaggle as
`mbkinaci/fruit-images-for-object-detection`: apple / banana / orange, 240 train and 60 test images, a VOC XML beside
each JPEG).

`data_dir` holds `train/` and `test/` with `*.jpg` + `*.xml`; when it does not and `kagglehub` is installed and
configured, `prepare_data` downloads the Kaggle dataset. Images are read by `voc` (any mode becomes RGB; what is
skipped and why is logged), resized to `image_size` square and held as one uint8 tensor; boxes scale with them.
Region proposals (`proposals`) are computed once per image in `prepare_data` and cached on disk under `cache_dir`; a
batch holds images with their boxes and proposals, which the detector samples and labels itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.data_module import DataModule, Strings, index_tensor
from datamodules.detection_transforms import augment_detection
from datamodules.images import predict_file_errors
from datamodules.proposals import ProposalCache, anchor_boxes
from datamodules.voc import VocFolder, read_image, read_voc_folder
from litlab.errors import LitlabError

KAGGLE_DATASET = "mbkinaci/fruit-images-for-object-detection"


class DetectionImages(Dataset):
    """Images held as one uint8 tensor with their boxes and proposals. A batch is `{"images": (B, 3, S, S) uint8,
    "boxes", "labels", "proposals": lists of (G, 4), (G,), (K, 4), "index": (B,)}` (no proposals for detectors that
    propose their own), for predict also "name" and "size" (the files' names and original (width, height)). With
    `augment`, each image is flipped, zoomed and colour-jittered with its boxes and proposals
    (`detection_transforms`)."""

    def __init__(
        self,
        images: Tensor,
        boxes: list[Tensor],
        labels: list[Tensor],
        proposals: list[Tensor] | None,
        augment: bool = False,
        scale_jitter: float = 0.0,
        colour_jitter: float = 0.0,
        names: list[str] | None = None,
        sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        self.images, self.boxes, self.labels, self.proposals = images, boxes, labels, proposals
        self.augment, self.scale_jitter, self.colour_jitter = augment, scale_jitter, colour_jitter
        self.names, self.sizes = names, sizes

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> dict:
        index = index_tensor(indices)
        images = self.images[index]
        boxes, labels = [self.boxes[i] for i in indices], [self.labels[i] for i in indices]
        proposals = None if self.proposals is None else [self.proposals[i] for i in indices]
        if self.augment:
            images = images.clone()
            for b in range(len(indices)):
                found = None if proposals is None else proposals[b]
                images[b], boxes[b], labels[b], found = augment_detection(
                    images[b], boxes[b], labels[b], found, self.scale_jitter, self.colour_jitter
                )
                if proposals is not None:
                    proposals[b] = found
        batch = {"images": images, "boxes": boxes, "labels": labels, "index": index}
        if proposals is not None:
            batch["proposals"] = proposals
        if self.names is not None:
            batch.update(name=[self.names[i] for i in indices], size=[self.sizes[i] for i in indices])
        return batch


class FruitDetectionData(DataModule):
    """The fruit dataset (or any VOC folder pair `train/`, `test/`) as batches of images with boxes and proposals
    (`DetectionImages`). What a model may read (`Experiment.from_data`): `classes`, `num_classes`, `image_size`,
    `proposals` (the proposal method, "none" when there are none).

    Args:
        data_dir: the folder holding `train/` and `test/` (searched one and two levels down too, as Kaggle unpacks).
        download: fetch the Kaggle dataset with `kagglehub` in `prepare_data` when the folders are missing.
        classes: object class names (label i+1; 0 is background).
        image_size: images are resized to this square.
        val_size: training images held out for validation (seeded).
        seed: the generator of the val split.
        proposals: compute selective-search proposals ("fast" or "quality" mode), use the notebook's "anchors"
            (every box on an `anchor_step` grid, see `proposals.anchor_boxes`), or "none" for detectors that propose
            their own (Faster R-CNN).
        anchor_step: the anchors' grid step and size unit, in pixels of the resized image.
        max_proposals: selective-search boxes kept per image (before the border and grid boxes).
        cache_dir: proposal cache (default: `<data_dir>/proposals`).
        augment: flip training images (p = 0.5) with their boxes and proposals; with `scale_jitter` > 0, zoom them
            in or out by up to 1 + scale_jitter; with `colour_jitter` > 0, scale brightness, contrast and saturation
            by up to that fraction.
        batch_size, eval_batch_size, num_workers: see `DataModule`.
        predict_files: images to detect objects in with `litlab predict`.
    """

    def __init__(
        self,
        data_dir: Path = Path("data/fruit"),
        download: bool = True,
        classes: tuple[str, ...] = ("apple", "banana", "orange"),
        image_size: PositiveInt = 320,
        val_size: PositiveInt = 30,
        seed: int = 42,
        proposals: Literal["fast", "quality", "anchors", "none"] = "fast",
        anchor_step: PositiveInt = 32,
        max_proposals: PositiveInt = 1000,
        cache_dir: Path | None = None,
        augment: bool = False,
        scale_jitter: NonNegativeFloat = 0.0,
        colour_jitter: ClosedUnitInterval = 0.0,
        batch_size: PositiveInt = 4,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        predict_files: Strings | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.splits: dict[str, DetectionImages] = {}
        self._folder_contents: dict[Path, VocFolder] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        """Object class names, label i+1 (0 is background): what the detector's records and W&B boxes show."""
        return tuple(self.hparams.classes)

    @property
    def num_classes(self) -> int:
        return len(self.hparams.classes)

    @property
    def image_size(self) -> int:
        """The side of the square images arrive at."""
        return self.hparams.image_size

    @property
    def proposals(self) -> str:
        """How each image's region proposals are made: "fast" or "quality" selective search, "anchors", or "none"."""
        return self.hparams.proposals

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
        if self.hparams.proposals in ("fast", "quality") and (folders := self._folders()) is not None:
            cache = self._cache()
            for folder in folders:  # rank 0 fills the proposal cache once
                for image in self._read(folder)[0]:
                    cache.get(image)

    def _cache(self) -> ProposalCache:
        folder = self.hparams.cache_dir or Path(self.hparams.data_dir) / "proposals"
        return ProposalCache(Path(folder), self.hparams.proposals, self.hparams.max_proposals)

    def _proposals(self, images: list[Tensor]) -> list[Tensor] | None:
        """Each image's region proposals (K, 4), or None when the data makes none."""
        mode = self.hparams.proposals
        if mode == "none":
            return None
        if mode == "anchors":
            return [anchor_boxes(self.hparams.image_size, self.hparams.anchor_step)] * len(images)
        cache = self._cache()
        return [cache.get(image) for image in images]

    def _read(self, folder: Path) -> VocFolder:
        """`read_voc_folder`, once per process (prepare_data and setup both need it)."""
        if folder not in self._folder_contents:
            self._folder_contents[folder] = read_voc_folder(folder, self.hparams.image_size, self.hparams.classes)
        return self._folder_contents[folder]

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
        for folder, (images, _, _) in zip(folders, (train, test)):
            if not images:
                raise LitlabError(f"{folder}: no .jpg, .jpeg or .png image with a readable VOC .xml beside it")
        if not 0 < hp.val_size < len(train[0]):
            raise LitlabError(f"--data.val_size={hp.val_size}: must be between 1 and {len(train[0]) - 1}")
        order = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(hp.seed)).tolist()
        parts = {"val": order[: hp.val_size], "train": order[hp.val_size :]}
        for split, (images, boxes, labels), ids in [
            ("train", train, parts["train"]),
            ("val", train, parts["val"]),
            ("test", test, range(len(test[0]))),
        ]:
            chosen = [images[i] for i in ids]
            self.splits[split] = DetectionImages(
                torch.stack(chosen),
                [boxes[i] for i in ids],
                [labels[i] for i in ids],
                self._proposals(chosen),
                augment=hp.augment and split == "train",
                scale_jitter=hp.scale_jitter,
                colour_jitter=hp.colour_jitter,
            )
        self._folder_contents.clear()  # held by the splits now

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"])

    def predict_dataloader(self) -> DataLoader:
        files = [Path(f) for f in self.hparams.predict_files or []]
        if not files:
            raise LitlabError("nothing to predict: pass --data.predict_files '[photo.jpg]'")
        images, sizes = [], []
        for path in files:
            with predict_file_errors(path):
                image, original = read_image(path, self.hparams.image_size)
            images.append(image)
            sizes.append(original)
        empty = [torch.zeros(0, 4)] * len(files)
        proposals = self._proposals(images)
        no_labels = [torch.zeros(0, dtype=torch.long)] * len(files)
        names = [str(f) for f in files]
        dataset = DetectionImages(torch.stack(images), empty, no_labels, proposals, names=names, sizes=sizes)
        return self.loader(dataset)
