"""FashionMNIST (notebook 15.2.4 and 15.3): 28x28 grey images of 10 kinds of clothing.

Read with torchvision's `FashionMNIST` from `<data_dir>/FashionMNIST/raw/` (the IDX files; downloaded there in
`prepare_data`), then held as one uint8 tensor: 55k train / 5k val drawn from the official 60k with a seeded generator,
and the official 10k test. With `augment`, each training batch gets the notebook's augmentations, per image, on the
training device: horizontal flip, +-2 px translation, 0.9-1.1 zoom, 0.9-1.1 contrast (the notebook made five fixed
copies of the training set instead).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import FashionMNIST

from datamodules.images import ImageClassData
from lightning_modules.errors import LitlabError


class FashionMNISTData(ImageClassData):
    """FashionMNIST as tensors.

    Args:
        data_dir: holds `FashionMNIST/raw/` (IDX files); `prepare_data` downloads them there when missing.
        download: fetch the files when missing (else a missing dataset is an error that says where it looked).
        val_size: validation images taken from the official training set.
        seed: seeds the train/val split.
        augment: augment training batches on the device (see the module docstring).
        predict_files: images to classify with `litlab predict` (any size; turned grey and resized to 28x28).
        batch_size, eval_batch_size, data_on_device, num_workers: see `InMemoryDataModule`.
    """

    classes = FashionMNIST.classes
    channels, size = 1, (28, 28)
    augmentation = dict(flip=0.5, shift=2, scale=(0.9, 1.1), contrast=(0.9, 1.1))

    def __init__(
        self,
        data_dir: Path = Path("data"),
        download: bool = True,
        val_size: int = 5_000,
        seed: int = 0,
        augment: bool = False,
        predict_files: list[Path] | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = 1024,
        data_on_device: bool | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            data_dir, val_size, seed, augment, predict_files, batch_size, eval_batch_size, data_on_device, num_workers
        )
        self.save_hyperparameters(logger=False)
        self.download = download

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            for train in (True, False):
                FashionMNIST(self.data_dir, train=train, download=True)
        except (OSError, RuntimeError) as err:  # no connection, mirror down, checksum mismatch
            raise LitlabError(
                f"could not download FashionMNIST into {self.data_dir / 'FashionMNIST' / 'raw'} "
                f"({str(err).splitlines()[0][:160]}): check the connection, or put the IDX files there yourself"
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
            raise LitlabError(f"FashionMNIST files in {self.data_dir} are unreadable or corrupt: {err}") from None
        return dataset.data.unsqueeze(1).to(torch.uint8), dataset.targets.long()  # (N, 1, 28, 28), (N,)
