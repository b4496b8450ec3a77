"""Tiny image datasets written in the real on-disk formats, whose classes are visible shapes (so a CNN can learn them).

- FashionMNIST: the four IDX files under `<root>/FashionMNIST/raw/`, as torchvision reads them;
- CIFAR-10: the pickled batches of `cifar-10-batches-py/`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def shapes(n: int, size: int, channels: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, size, size, channels) of class-specific shapes at random offsets, with noise; labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    c = size / 2 + rng.integers(-size // 8, size // 8 + 1, (n, 2))  # shape centres, (n, 2)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dy, dx = yy - c[:, 0, None, None], xx - c[:, 1, None, None]  # (n, size, size)
    r, half = np.hypot(dy, dx), size / 4
    masks = [
        np.abs(dy) < 2,  # horizontal bar
        np.abs(dx) < 2,  # vertical bar
        (np.abs(np.abs(dy) - 4) < 1.5) & (np.abs(dx) < half),  # two bars (classes survive a horizontal flip)
        ((np.abs(dy - dx) < 2) | (np.abs(dy + dx) < 2)) & (r < half * 1.4),  # X
        (np.abs(dy) < half) & (np.abs(dx) < half),  # filled square
        (np.maximum(np.abs(dy), np.abs(dx)) < half) & (np.maximum(np.abs(dy), np.abs(dx)) > half - 2),  # frame
        r < half,  # disc
        (r < half) & (r > half - 2),  # ring
        ((np.abs(dy) < 2) | (np.abs(dx) < 2)) & (r < half),  # plus
        (np.abs(dy) < half) & (np.abs(dx) < 2) & (dy < 0),  # short upper bar
    ]
    picked = np.stack(masks)[labels, np.arange(n)]  # (n, size, size)
    images = picked * rng.uniform(150, 255, (n, 1, 1)) + rng.normal(0, 12, picked.shape)
    images = np.repeat(images[..., None], channels, axis=-1) * rng.uniform(0.6, 1.0, (n, 1, 1, channels))
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 data (type 0x08), big-endian dimensions, as in the MNIST distribution."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, train: int = 1200, test: int = 300) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = shapes(n, 28, 1, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_predict_images(root: Path) -> None:
    """Files a user might hand to predict: a grey PNG of another size and an RGB JPEG; and a text file that is not
    an image."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    images, _ = shapes(2, 64, 3, seed=7)
    Image.fromarray(images[0, ..., 0]).save(root / "grey.png")
    Image.fromarray(images[1]).save(root / "colour.jpg")
    (root / "not_an_image.png").write_text("hello")


def write_cifar10(root: Path, per_batch: int = 200, test: int = 300) -> Path:
    """`cifar-10-batches-py/` as the official archive holds it: five training batches, a test batch and the meta
    file, each a pickled dict with bytes keys (pickle is the format itself; litlab's reader refuses any object but
    arrays)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = shapes(test if name == "test_batch" else per_batch, 32, 3, seed=10 + seed)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),  # (N, 3072): R, G, B planes
            b"filenames": [f"{i}.png".encode() for i in range(len(images))],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
