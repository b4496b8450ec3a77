"""What the detectors do to their ResNet backbones: BatchNorm frozen for fine-tuning with a few images per batch, early
stages frozen as torchvision does, and held-out losses measured without changing anything."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")  # what `trainable_backbone_layers` counts


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of `module` replaced, in place, by a FrozenBatchNorm2d (fixed statistics and affine
    parameters, loaded from the same state-dict keys): pretrained statistics are kept when a detector is fine-tuned
    with a few images per batch, and no evaluation can change them."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            freeze_batchnorm(child)
    return module


def freeze_resnet_stages(resnet: nn.Module, trainable_layers: int) -> None:
    """Stop gradients to the ResNet stages beyond the last `trainable_layers` (counted from layer4 down to conv1), as
    torchvision does for pretrained detectors."""
    trained = TRAINABLE_ORDER[:trainable_layers]
    for name, parameter in resnet.named_parameters():
        if not name.startswith(trained):
            parameter.requires_grad_(False)


@contextmanager
def losses_without_updates(net: nn.Module, device: torch.device) -> Iterator[None]:
    """torchvision's detectors return their losses only in train mode: this gives train mode with every BatchNorm
    evaluating (running statistics used, never updated), no gradients, and the random state of the proposal
    samplers forked, so measuring a held-out loss changes neither the model nor the training's random numbers."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            yield
    finally:
        net.eval()
