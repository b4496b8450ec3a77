"""Image classifiers for small images (FashionMNIST, notebook 15.2.4 and 15.3; CIFAR-10), as plain nn.Modules.

Each takes float images (B, C, H, W) in [0, 1], standardises them itself (so a checkpoint needs no dataset statistics
to predict) and returns logits (B, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, PositiveFloat, PositiveInt
from torch import Tensor, nn

FASHION_MEAN, FASHION_STD = (0.286,), (0.353,)


class Standardize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def init_like_the_notebook(module: nn.Module) -> None:
    """Kaiming-normal convolutions, Xavier linear layers, zero biases (notebook 15.3.1)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


class FullyConnected(nn.Module):
    """784 -> hidden... -> classes with ReLU and dropout (notebook 15.2.4: about 88 %)."""

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_pixels: int = 28 * 28,
        hidden: Sequence[int] = (256, 128),
        dropout: ClosedUnitInterval = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        sizes = [in_pixels, *hidden]
        layers: list[nn.Module] = [Standardize(FASHION_MEAN, FASHION_STD), nn.Flatten()]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.layers = nn.Sequential(*layers)
        init_like_the_notebook(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, 1, 28, 28) -> (B, classes)


def conv_bn(c_in: int, c_out: int, batch_norm: bool = True) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with max-pooling, then one hidden fully connected layer (notebook 15.3.1: 32 and 64
    channels, 3136 -> 128 -> classes, 91 %)."""

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        batch_norm: bool = False,
        dropout: ClosedUnitInterval = 0.0,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        c1, c2 = channels
        self.layers = nn.Sequential(
            Standardize(FASHION_MEAN, FASHION_STD),
            *conv_bn(1, c1, batch_norm), nn.MaxPool2d(2),  # (B, c1, 14, 14)
            *conv_bn(c1, c2, batch_norm), nn.MaxPool2d(2),  # (B, c2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip
        init_like_the_notebook(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DeepCNN(nn.Module):
    """The notebook's five-convolution BatchNorm network of 15.3.3 (AlexNet-like; 91.19 % after 40 epochs)."""

    def __init__(self, num_classes: PositiveInt = 10, dropout: ClosedUnitInterval = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            Standardize(FASHION_MEAN, FASHION_STD),
            *conv_bn(1, 32), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            *conv_bn(32, 64), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            *conv_bn(64, 128), *conv_bn(128, 256), *conv_bn(256, 256), nn.MaxPool2d(2),  # (B, 256, 3, 3)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 256)
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256, 1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )  # fmt: skip
        init_like_the_notebook(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class ConvGroup(nn.Module):
    """3x3 convolution, 2x2 max-pooling, BatchNorm, GELU, then 3x3 convolution, BatchNorm, GELU (airbench's block:
    pooling before the norm halves its cost); with `residual`, the second half is a residual branch added to its input
    (a ResNet-9-style block). BatchNorm scales stay 1 (only shifts learn)."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.first = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out, momentum=bn_momentum), nn.GELU(),
        )  # fmt: skip
        self.second = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=bn_momentum), nn.GELU()
        )
        for layer in [*self.first, *self.second]:
            if isinstance(layer, nn.BatchNorm2d):
                layer.weight.requires_grad_(False)
            elif isinstance(layer, nn.Conv2d) and not (residual and layer is self.second[0]):
                nn.init.dirac_(layer.weight[: layer.in_channels])  # the first channels pass their input through

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x)  # (B, c_out, H / 2, W / 2)
        return x + self.second(x) if self.residual else self.second(x)


class AirbenchNet(nn.Module):
    """A small fast network after Keller Jordan's airbench (94 % on CIFAR-10 in about 10 epochs): a k x k convolution
    (airbench: 2x2) whose filters whiten the image patches (set from the first training batch by `whiten_from`, then
    fixed), three `ConvGroup`s (each halving the resolution), global max-pooling and a linear layer whose logits are
    scaled down (`logit_scale`). With `residual`, each group's second convolution is a residual branch.

    Args:
        num_classes: classes.
        in_channels: image channels.
        widths: channels of the three groups.
        residual: residual second convolutions (ResNet-9 style) instead of identity-initialised plain ones.
        whiten_kernel: side of the whitening patches; the stem has 2 * in_channels * whiten_kernel**2 channels (a grey
            image's 2x2 patches give 8, an RGB image's 24).
        bn_momentum: BatchNorm's running-statistics momentum (PyTorch's convention).
        logit_scale: multiplies the logits (airbench: 1/9), which keeps early training stable at high learning rates.
        mean, std: per-channel statistics the network standardises its [0, 1] inputs with.
    """

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 3,
        widths: Sequence[int] = (64, 256, 256),
        residual: bool = False,
        whiten_kernel: PositiveInt = 2,
        bn_momentum: ClosedUnitInterval = 0.4,
        logit_scale: PositiveFloat = 1 / 9,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.logit_scale = logit_scale
        self.standardize = Standardize(mean, std)
        patch = in_channels * whiten_kernel**2
        # (B, 2 * patch, H - k + 1, W - k + 1)
        self.whiten = nn.Conv2d(in_channels, 2 * patch, whiten_kernel, bias=False)
        self.whiten.weight.requires_grad_(False)
        groups, c_in = [], 2 * patch
        for width in widths:
            groups.append(ConvGroup(c_in, width, bn_momentum, residual))
            c_in = width
        self.groups = nn.Sequential(*groups)  # (B, widths[-1], (H - k + 1) // 8, (W - k + 1) // 8)
        self.head = nn.Linear(c_in, num_classes, bias=False)

    @torch.no_grad()
    def whiten_from(self, images: Tensor, eps: float = 5e-4) -> Tensor:
        """Set the k x k filters to the eigenvectors of the (standardised) images' patch covariance, divided by the
        square roots of their eigenvalues, and their negatives (so GELU keeps both signs); returns the weight."""
        x = self.standardize(images.float())
        c, (kh, kw) = x.size(1), self.whiten.kernel_size
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)  # (P, 4C)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).view(-1, c, kh, kw)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))
        return self.whiten.weight

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.whiten(self.standardize(x)))
        x = self.groups(x).amax(dim=(2, 3))  # (B, widths[-1])
        return self.head(x) * self.logit_scale
