"""CIFAR-10 (notebook 15.5): 32x32 colour images of 10 classes, read from the official `cifar-10-batches-py` files.

Those files are Python pickles. They are read by an unpickler that builds only dicts, lists, strings, numbers and numpy
uint8 arrays and refuses every other object, so a tampered file cannot run code (torchvision's CIFAR10 would unpickle
anything, and checks md5 sums that a re-written file cannot match; the archive's checksum is checked at download).
45k train / 5k val drawn from the official 50k with a seeded generator; the official 10k test. With `augment`, each
training batch is flipped and shifted by up to 4 px (reflected borders) on the training device, per image.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.downloads import download_and_extract
from datamodules.images import ImageClassData
from litlab.errors import LitlabError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"  # renamed in numpy 2


class _BatchUnpickler(pickle.Unpickler):
    """Builds the containers, strings and numbers pickle needs and numpy arrays; nothing else."""

    ARRAYS = {("numpy", "ndarray"), ("numpy", "dtype")}
    ARRAYS |= {(module, "_reconstruct") for module in ("numpy.core.multiarray", "numpy._core.multiarray")}
    ARRAYS.add(("_codecs", "encode"))  # how protocol 2 spells bytes when Python 3 wrote the file

    def find_class(self, module: str, name: str):
        if (module, name) in self.ARRAYS:  # a pickle names numpy's core module as the numpy that wrote it did
            return super().find_class(re.sub(r"^numpy\._?core\b", NUMPY_CORE, module), name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def read_batch(path: Path) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) of one CIFAR-10 batch file."""
    with open(path, "rb") as file:
        batch = _BatchUnpickler(file, encoding="bytes").load()
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"b'data' is not a uint8 array of (N, 3072) in {path}")
    images = torch.from_numpy(data.copy()).view(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32
    return images, torch.tensor(labels, dtype=torch.long)


class CIFAR10Data(ImageClassData):
    """CIFAR-10 as tensors; `data_dir` holds `cifar-10-batches-py/` (arguments: see `ImageClassData`)."""

    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    channels, size = 3, (32, 32)
    augmentation = dict(flip=0.5, shift=4, padding_mode="reflection")

    def prepare_data(self) -> None:
        if not self.download or (self.data_dir / FOLDER).is_dir():
            return
        instead = ": check the connection, or extract cifar-10-python.tar.gz there yourself"
        download_and_extract(URL, self.data_dir, FOLDER, md5=ARCHIVE_MD5, instead=instead)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        folder = self.data_dir / FOLDER
        files = [folder / name for name in (TRAIN_FILES if train else TEST_FILES)]
        if missing := [f.name for f in files if not f.is_file()]:
            raise LitlabError(
                f"CIFAR-10 not found in {folder} (missing {', '.join(missing)}): run with --data.download=true "
                f"(needs internet) or point --data.data_dir at a directory holding {FOLDER}/"
            )
        try:
            parts = [read_batch(f) for f in files]
        except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, OSError) as err:
            raise LitlabError(f"CIFAR-10 files in {folder} are corrupt or not CIFAR-10 batches: {err}") from None
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
