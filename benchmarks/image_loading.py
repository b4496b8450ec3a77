"""Images/s of `fashion_cnn` training with litlab's tensor dataset (augmented per batch on the training device)
against the standard DataLoader path (torchvision's FashionMNIST with per-image transforms in worker processes).

    python benchmarks/image_loading.py                      # synthetic FashionMNIST-sized IDX files, CPU
    python benchmarks/image_loading.py --data_dir data --gpu  # the real dataset, one GPU (bf16)

Both paths apply the same augmentations (flip, +-2 px shift, 0.9-1.1 zoom, contrast) and train the same network with
the same batch size; only how images reach the model differs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from throughput import measure  # noqa: E402

from datamodules.fashion_mnist import FashionMNISTData  # noqa: E402


def stack_items(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([x for x, _ in items]), "y": torch.tensor([y for _, y in items])}


class PerImageFashionMNIST(L.LightningDataModule):
    """What the Lightning examples and the notebook do: a torchvision Dataset transformed image by image."""

    classes = FashionMNISTData.classes

    def __init__(self, data_dir: Path, batch_size: int = 256, num_workers: int = 2, val_size: int = 5_000) -> None:
        super().__init__()
        self.data_dir, self.batch_size, self.num_workers, self.val_size = data_dir, batch_size, num_workers, val_size
        self.augment = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomHorizontalFlip(),
                v2.RandomAffine(degrees=0, translate=(2 / 28, 2 / 28), scale=(0.9, 1.1)),
                v2.ColorJitter(contrast=0.1),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )
        self.plain = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def setup(self, stage: str) -> None:
        train = FashionMNIST(self.data_dir, train=True, transform=self.augment)
        val = FashionMNIST(self.data_dir, train=True, transform=self.plain)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
        self.train = torch.utils.data.Subset(train, order[self.val_size :])
        self.val = torch.utils.data.Subset(val, order[: self.val_size])

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=lambda items: {
                "x": torch.stack([x for x, _ in items]),
                "y": torch.tensor([y for _, y in items]),
            },
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, shuffle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, help="holds FashionMNIST/raw (default: synthetic files of its size)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="one GPU, bf16-mixed")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve() if args.data_dir else None
    if data_dir is None:
        from image_fixtures import write_fashion_mnist

        data_dir = write_fashion_mnist(Path(tempfile.mkdtemp(prefix="litlab-fashion-")), train=60_000, test=10_000)
    common = [f"--data.data_dir={data_dir}", "--data.download=false"]
    if args.gpu:
        common += ["--config", str(ROOT / "configs/trainer/gpu.yaml")]
    per_image = ["--data=image_loading.PerImageFashionMNIST", f"--data.data_dir={data_dir}"]
    if args.gpu:
        per_image += ["--config", str(ROOT / "configs/trainer/gpu.yaml")]
    variants = [
        ("tensors, augmented per batch on the training device", common),
        ("torchvision dataset, per-image transforms, 2 workers", per_image),
    ]
    measure(str(ROOT / "configs/fashion_cnn.yaml"), args.epochs, variants)


if __name__ == "__main__":
    main()
