"""The image datasets: files read in their real formats, seeded splits, batches turned into floats and augmented on
the training device, and one-line errors for missing or broken data."""

from __future__ import annotations

import os
import pickle
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import cli, config, fails_in_one_line, tiny
from image_fixtures import shapes
from PIL import Image
from torchvision.datasets import FashionMNIST

from datamodules.cifar10 import CIFAR10Data
from datamodules.fashion_mnist import FashionMNISTData
from datamodules.images import augment_batch

FASHION_TINY = tiny("fashion_cnn")
CIFAR_TINY = tiny("cifar10_fast")


def batch(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_augmentation_keeps_shape_and_range():
    x = batch()
    out = augment_batch(x, **FashionMNISTData.augmentation)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_augmentation_flips_and_shifts_by_whole_pixels():
    x = batch()
    assert torch.allclose(augment_batch(x, flip=0.0), x, atol=1e-5)  # nothing asked, nothing done
    assert torch.allclose(augment_batch(x, flip=1.0), x.flip(-1), atol=1e-5)
    shifted = augment_batch(x, flip=0.0, shift=2)
    # every image is the original moved by whole pixels (content in, zeros shifted in at the borders)
    for image, original in zip(shifted, x):
        assert any(
            torch.allclose(image[:, 2:-2, 2:-2], original.roll((dy, dx), (1, 2))[:, 2:-2, 2:-2], atol=1e-5)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


def fashion(fixture_data, **kwargs) -> FashionMNISTData:
    return FashionMNISTData(data_dir=fixture_data / "fashion", download=False, val_size=200, **kwargs)


def image_rows(images: torch.Tensor) -> list[bytes]:
    """Each image's pixels as bytes, sorted: equal for two sets of the same images in any order."""
    return sorted(bytes(row) for row in images.flatten(1).numpy())


def test_fashion_splits_are_seeded_disjoint_and_complete(fixture_data):
    data = fashion(fixture_data)
    train, val, test = (data.make_split(s) for s in ("train", "val", "test"))
    assert train["x"].shape == (1000, 1, 28, 28) and train["x"].dtype == torch.uint8
    assert len(val["y"]) == 200 and len(test["y"]) == 300
    official, _ = data.load(train=True)
    rows = lambda x: set(image_rows(x))  # noqa: E731
    assert rows(train["x"]) | rows(val["x"]) == rows(official) and not rows(train["x"]) & rows(val["x"])
    assert torch.equal(fashion(fixture_data).make_split("val")["x"], val["x"])  # same seed, same split
    assert not torch.equal(fashion(fixture_data, seed=1).make_split("val")["x"], val["x"])


def test_training_on_val_trains_on_the_whole_official_training_set(fixture_data):
    data = fashion(fixture_data, train_on_val=True)
    official, labels = data.load(train=True)
    train, val = data.make_split("train"), data.make_split("val")
    assert image_rows(train["x"]) == image_rows(official)
    assert torch.equal(train["y"].sort().values, labels.sort().values)
    assert torch.equal(val["x"], fashion(fixture_data).make_split("val")["x"])  # the same val images, now seen


@pytest.mark.parametrize("training", [True, False])
def test_batches_become_floats_and_only_training_batches_are_augmented(fixture_data, training):
    data = fashion(fixture_data, augment=True)
    data.trainer = SimpleNamespace(training=training)
    images = data.make_split("val")["x"][:64]
    out = data.on_after_batch_transfer({"x": images, "y": torch.zeros(64)}, 0)["x"]
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, images.float() / 255) is not training


def test_predict_reads_any_image_size_and_mode(fixture_data):
    data = fashion(fixture_data, predict_files=[fixture_data / "grey.png", fixture_data / "colour.jpg"])
    predict = data.make_split("predict")
    assert predict["x"].shape == (2, 1, 28, 28) and predict["x"].dtype == torch.uint8
    assert predict["index"].tolist() == [0, 1]


def test_missing_fashion_mnist_says_where_it_looked(capfd, tmp_path):
    empty = tmp_path / "nothing"
    last = fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("fashion_cnn"),
        f"--data.data_dir={empty}",
        "--data.download=false",
        "--trainer.logger=false",
        naming=str(empty / "FashionMNIST" / "raw"),
    )
    assert "--data.download=true" in last


@pytest.mark.parametrize("damage", ["truncated", "not IDX"])
def test_corrupt_fashion_mnist_is_one_line(capfd, tmp_path, fixture_data, damage):
    raw = tmp_path / "broken" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for file in (fixture_data / "fashion" / "FashionMNIST" / "raw").iterdir():
        (raw / file.name).write_bytes(file.read_bytes()[:100] if damage == "truncated" else b"garbage")
    line = fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("fashion_cnn"),
        f"--data.data_dir={tmp_path / 'broken'}",
        "--data.download=false",
        "--trainer.logger=false",
        naming="corrupt",
    )
    assert "()" not in line and not line.rstrip().endswith(":")  # says what went wrong (torchvision may not)


def test_predict_file_that_is_not_an_image(capfd, fixture_data, tmp_path):
    cli(
        "fit",
        "--config",
        config("fashion_fcn"),
        *FASHION_TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    for bad in (fixture_data / "not_an_image.png", tmp_path / "missing.png"):
        fails_in_one_line(capfd, "predict", "--ckpt_path", best, f"--data.predict_files=[{bad}]", naming=str(bad))
    # an image over PIL's decompression-bomb limit (DecompressionBombError is not an OSError)
    huge = fixture_data / "colour.jpg"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
        fails_in_one_line(capfd, "predict", "--ckpt_path", best, f"--data.predict_files=[{huge}]", naming="too large")


def test_failed_download_is_one_line(capfd, tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3]>")

    monkeypatch.setattr(FashionMNIST, "download", offline)  # what torchvision raises without a connection
    fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("fashion_cnn"),
        f"--data.data_dir={tmp_path / 'data'}",
        "--trainer.logger=false",
        naming="could not download FashionMNIST",
    )


def test_cifar_batches_are_read_as_written(fixture_data):
    data = CIFAR10Data(data_dir=fixture_data / "cifar10", download=False, val_size=100)
    images, labels = data.load(train=True)
    assert images.shape == (1000, 3, 32, 32) and images.dtype == torch.uint8
    first, first_labels = shapes(200, 32, 3, seed=10)  # data_batch_1, as image_fixtures wrote it
    assert torch.equal(images[:200], torch.from_numpy(first).permute(0, 3, 1, 2))
    assert labels[:200].tolist() == first_labels.tolist()
    assert data.make_split("test")["x"].shape == (300, 3, 32, 32)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_reader_refuses_objects_other_than_arrays(capfd, tmp_path, fixture_data):
    folder = tmp_path / "evil" / "cifar-10-batches-py"
    shutil.copytree(fixture_data / "cifar10" / "cifar-10-batches-py", folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("cifar10_resnet18_scratch"),
        f"--data.data_dir={tmp_path / 'evil'}",
        "--data.download=false",
        "--trainer.logger=false",
        naming="refusing to build posix.system",
    )
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_says_where_it_looked(capfd, tmp_path):
    fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("cifar10_resnet18_scratch"),
        f"--data.data_dir={tmp_path}",
        "--data.download=false",
        "--trainer.logger=false",
        naming=f"CIFAR-10 not found in {tmp_path / 'cifar-10-batches-py'}",
    )


@pytest.mark.parametrize("padding_mode", ["zeros", "reflection"])
def test_whole_pixel_moves_match_affine_resampling(padding_mode):
    """The gather that flips and shifts gives exactly what one bilinear resampling of the same moves gives."""
    from datamodules.images import move_by_pixels

    x = batch(32)
    mirror = torch.rand(32) < 0.5
    pixels = torch.randint(-4, 5, (32, 2))
    theta = torch.zeros(32, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = torch.where(mirror, -1.0, 1.0), 1.0
    theta[:, :, 2] = pixels * (2 / 28)
    grid = torch.nn.functional.affine_grid(theta, [32, 1, 28, 28], align_corners=False)
    resampled = torch.nn.functional.grid_sample(x, grid, padding_mode=padding_mode, align_corners=False)
    torch.testing.assert_close(move_by_pixels(x, mirror, pixels, padding_mode), resampled, atol=1e-5, rtol=0)


def test_random_erasing_blanks_one_rectangle_per_chosen_image():
    x = torch.ones(64, 1, 28, 28)
    out = augment_batch(x, flip=0.0, erase=1.0)
    for image in out[:, 0]:
        rows, columns = torch.nonzero(image == 0, as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(columns.max() - columns.min() + 1)
        assert len(rows) == height * width  # one solid rectangle
        assert 0.01 <= len(rows) / 784 <= 0.26
    assert torch.equal(augment_batch(x, flip=0.0, erase=0.0), x)
