"""FashionMNIST (notebook 15.2.4 and 15.3): 28x28 grey images of 10 kinds of clothing.

Read with torchvision's `FashionMNIST` from `<data_dir>/FashionMNIST/raw/` (the IDX files; downloaded there in
`prepare_data`), then held as one uint8 tensor: 55k train / 5k val drawn from the official 60k with a seeded generator,
and the official 10k test. With `augment`, each training batch gets the notebook's augmentations, per image, on the
training device: horizontal flip, +-2 px translation, 0.9-1.1 zoom, 0.9-1.1 contrast (the notebook made five fixed
copies of the training set instead).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.datasets import FashionMNIST

from datamodules.images import ImageClassData
from litlab.errors import LitlabError, first_line


class FashionMNISTData(ImageClassData):
    """FashionMNIST as tensors; `data_dir` holds `FashionMNIST/raw/` (arguments: see `ImageClassData`)."""

    classes = FashionMNIST.classes
    channels, size = 1, (28, 28)
    augmentation = dict(flip=0.5, shift=2, scale=(0.9, 1.1), contrast=(0.9, 1.1))

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            for train in (True, False):
                FashionMNIST(self.data_dir, train=train, download=True)
        except (OSError, RuntimeError) as err:  # no connection, mirror down, checksum mismatch
            raise LitlabError(
                f"could not download FashionMNIST into {self.data_dir / 'FashionMNIST' / 'raw'} "
                f"({first_line(err)}): check the connection, or put the IDX files there yourself"
            ) from None

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            dataset = FashionMNIST(self.data_dir, train=train)
        except RuntimeError as err:
            if "not found" not in str(err):  # torchvision: "Dataset not found. You can use download=True ..."
                raise LitlabError(f"FashionMNIST files in {self.data_dir} are corrupt: {err}") from None
            raise LitlabError(
                f"FashionMNIST not found in {self.data_dir / 'FashionMNIST' / 'raw'}: run with --data.download=true "
                f"(needs internet) or point --data.data_dir at a directory holding FashionMNIST/raw"
            ) from None
        except (ValueError, AssertionError, OSError, KeyError) as err:
            raise LitlabError(
                f"FashionMNIST files in {self.data_dir / 'FashionMNIST' / 'raw'} are unreadable or corrupt "
                f"({first_line(err)}): delete them and run with --data.download=true"
            ) from None
        return dataset.data.unsqueeze(1).to(torch.uint8), dataset.targets.long()  # (N, 1, 28, 28), (N,)
