"""Image models: torchvision weights (loaded for fit only, one line offline), a frozen backbone's schedule,
airbench's whitening stem and groups, and mirrored test-time augmentation."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from conftest import built, cli, config, fails_in_one_line, tiny

CIFAR_TINY = tiny("cifar10_fast")


def batch(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_unavailable_weights_say_how_to_proceed(capfd, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)  # what torchvision meets offline
    last = fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("cifar10_resnet18_finetune"),
        *CIFAR_TINY[:4],
        "--trainer.logger=false",
        naming="could not load resnet18 weights IMAGENET1K_V1",
    )
    assert "--model.init_args.weights=null" in last and str(tmp_path / "torch") in last


def test_pretrained_weights_load_for_fit_only(tmp_path, monkeypatch):
    reference = torchvision.models.resnet18(num_classes=1000).state_dict()  # stands in for the ImageNet file
    calls = []

    def from_cache(url, *args, **kwargs):
        calls.append(url)
        return reference

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", from_cache)
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    tiny = [*CIFAR_TINY[:4], "--model.image_size=32", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    run = cli("fit", "--config", config("cifar10_resnet18_finetune"), *tiny, "--model.optimizer.lr=0", *quiet)
    assert calls and calls[0].endswith(".pth")
    backbone = run.model.backbone.state_dict()
    assert torch.equal(backbone["conv1.weight"], reference["conv1.weight"])  # lr 0: exactly what was loaded
    calls.clear()
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    cli("test", "--ckpt_path", best, *CIFAR_TINY[:4], "--trainer.limit_test_batches=1", *quiet)
    assert not calls  # the checkpoint has the weights: no download for test


def test_frozen_backbone_has_no_learning_rate_until_it_thaws():
    from functools import partial

    from torch import nn

    from litlab.optim import configure_optimizers

    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # [0] stands for the backbone, [1] for the head
    sgd = partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4)
    setup = configure_optimizers(model, sgd, None, 100, frozen=model[0], frozen_steps=10)  # constant rate
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]

    def rates() -> dict[bool, set[float]]:
        return {held: {g["lr"] for g in optimizer.param_groups if g["held"] == held} for held in (True, False)}

    backbone = {id(p) for g in optimizer.param_groups if g["held"] for p in g["params"]}
    assert backbone == {id(p) for p in model[0].parameters()}
    assert rates() == {True: {0.0}, False: {0.1}}
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert rates() == {True: {0.1}, False: {0.1}}


@pytest.mark.parametrize(("channels", "kernel"), [(3, 2), (1, 3)])
def test_whitening_filters_decorrelate_image_patches(channels, kernel):
    from lightning_modules.components.convnets import AirbenchNet

    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, channels, 8, 8, generator=g).cumsum(-1) / 8  # neighbouring pixels correlated
    net = AirbenchNet(
        widths=(8, 8, 8), in_channels=channels, whiten_kernel=kernel, mean=[0.5] * channels, std=[1.0] * channels
    )
    net.whiten_from(images, eps=1e-8)
    dims = channels * kernel**2  # one filter per eigenvector of the patch covariance, and its negative
    assert net.whiten.weight.shape == (2 * dims, channels, kernel, kernel)
    out = net.whiten(net.standardize(images))[:, :dims]  # (B, dims, 9 - kernel, 9 - kernel)
    flat = out.permute(1, 0, 2, 3).reshape(dims, -1)
    covariance = flat @ flat.T / flat.size(1)
    torch.testing.assert_close(covariance, torch.eye(dims), atol=5e-3, rtol=0)
    torch.testing.assert_close(net.whiten.weight[dims:], -net.whiten.weight[:dims])


def test_airbench_groups_add_their_second_convolution_only_when_residual():
    from lightning_modules.components.convnets import ConvGroup

    x = torch.randn(2, 4, 8, 8)
    for residual in (False, True):
        group = ConvGroup(4, 8, bn_momentum=0.1, residual=residual).eval()
        first = group.first(x)
        expected = first + group.second(first) if residual else group.second(first)
        torch.testing.assert_close(group(x), expected)
        assert group(x).shape == (2, 8, 4, 4)
    # the plain second convolution starts as the identity on its first channels; the residual branch does not need to
    assert torch.equal(ConvGroup(4, 8, 0.1).second[0].weight[:, :, 1, 1].diagonal(), torch.ones(8))
    assert not torch.equal(ConvGroup(4, 8, 0.1, residual=True).second[0].weight[:, :, 1, 1].diagonal(), torch.ones(8))


def test_flip_tta_predicts_the_same_for_an_image_and_its_mirror():
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    x = batch(4)
    plain, tta = (built(ImageClassifier(SmallCNN, flip_tta=flag, num_classes=10)).eval() for flag in (False, True))
    tta.load_state_dict(plain.state_dict())
    assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-4)
    torch.testing.assert_close(tta(x), tta(x.flip(-1)))
    torch.testing.assert_close(tta(x), (plain(x) + plain(x.flip(-1))) / 2)


def test_accuracy_is_the_share_of_correct_predictions_with_imbalanced_classes():
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    model = built(ImageClassifier(SmallCNN, num_classes=3))
    y, predicted = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2]), torch.tensor([0, 0, 0, 0, 0, 0, 2, 1])
    model.acc["val"](predicted, y)
    assert model.acc["val"].compute().item() == 0.75  # 6 of 8; not the mean of the per-class recalls, 1/3


def test_shift_tta_averages_the_shifted_and_mirrored_views_and_stays_symmetric():
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    x = batch(4)
    plain = built(ImageClassifier(SmallCNN, num_classes=10)).eval()
    tta = built(ImageClassifier(SmallCNN, flip_tta=True, shift_tta=2, num_classes=10)).eval()
    tta.load_state_dict(plain.state_dict())
    zeros = torch.zeros_like(x[..., :2])
    right, left = torch.cat([zeros, x[..., :-2]], -1), torch.cat([x[..., 2:], zeros], -1)  # content moved 2 px
    views = [x, right, left, x.flip(-1), right.flip(-1), left.flip(-1)]
    torch.testing.assert_close(tta(x), torch.stack([plain(v) for v in views]).mean(0))
    torch.testing.assert_close(tta(x), tta(x.flip(-1)))
    seen = []
    tta.net.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    tta(x), tta.train()(x)
    assert seen == [24, 4]  # the six views in one batch; training sees the images alone


def test_cutmix_pastes_a_rectangle_from_another_image_and_weights_the_classes_by_area():
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    torch.manual_seed(0)
    model = built(ImageClassifier(SmallCNN, cutmix=1.0, num_classes=10))
    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 28, 28) / 8  # each image one grey level: its class
    y = torch.arange(8)
    mixed = 0
    for _ in range(20):
        out = model.cut_and_mix({"x": x, "y": y})
        assert out["x"].shape == x.shape and out["y"].shape == (8, 10)
        for image, target in zip(out["x"], out["y"]):
            levels, pixels = (image * 8).round().long().unique(return_counts=True)
            share = torch.zeros(10).index_add_(0, levels, pixels / pixels.sum())
            torch.testing.assert_close(target, share)  # each class weighted by the pixels it holds
            mixed += len(levels) == 2
    assert mixed > 40  # most images hold a rectangle of another


@pytest.mark.filterwarnings(r"ignore:You are trying to `self\.log\(\)`")
def test_cutmix_is_drawn_for_its_share_of_training_batches_only(monkeypatch):
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    torch.manual_seed(0)
    batch = {"x": torch.rand(2, 1, 28, 28), "y": torch.tensor([0, 1])}
    for share, expected in [(0.0, 0), (0.5, range(35, 66)), (1.0, 100)]:
        model, mixed = built(ImageClassifier(SmallCNN, cutmix=share, num_classes=10)), []
        monkeypatch.setattr(model, "cut_and_mix", lambda b, mixed=mixed: mixed.append(b) or b)
        for _ in range(100):
            model._shared_step(batch, "train")
            model._shared_step(batch, "val")
        assert len(mixed) in expected if isinstance(expected, range) else len(mixed) == expected


@pytest.mark.filterwarnings(r"ignore:You are trying to `self\.log\(\)`")
def test_ensemble_members_learn_as_they_would_alone_and_predict_together():
    from lightning_modules.components.convnets import SmallCNN
    from lightning_modules.image_classifier import ImageClassifier

    torch.manual_seed(0)
    ensemble = built(ImageClassifier(SmallCNN, members=2, flip_tta=True, num_classes=10))
    first, second = ensemble.net.members
    assert not torch.allclose(first.layers[1].weight, second.layers[1].weight)  # each initialised afresh
    alone = [built(ImageClassifier(SmallCNN, flip_tta=True, num_classes=10)) for _ in range(2)]
    for solo, member in zip(alone, ensemble.net.members):
        solo.net.load_state_dict(member.state_dict())
    images = {"x": batch(8), "y": torch.arange(8)}
    ensemble._shared_step(images, "train").backward()
    for solo, member in zip(alone, ensemble.net.members):
        solo._shared_step(images, "train").backward()
        for mine, its in zip(member.parameters(), solo.net.parameters(), strict=True):
            torch.testing.assert_close(mine.grad, its.grad)  # the gradient of its own loss, at full strength
    x = batch(4)
    torch.testing.assert_close(ensemble.eval()(x), (alone[0].eval()(x) + alone[1].eval()(x)) / 2)


@pytest.mark.parametrize("members", [1, 2])
def test_fast_cifar_whitens_from_its_first_training_batch(members):
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false"]
    steps = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0"]
    sized = "--model.init_args.num_classes=10"  # the network can be built before fit (else the data sizes it in fit)
    shape = [sized, f"--model.init_args.members={members}"]
    run = cli("fit", "--config", config("cifar10_fast"), *CIFAR_TINY, *steps, *quiet, *shape, run=False)
    run.model.configure_model()
    nets = run.model.net.members if members > 1 else [run.model.net]
    initial = [net.whiten.weight.clone() for net in nets]
    run.trainer.fit(run.model, run.datamodule)
    for net, before in zip(nets, initial, strict=True):
        weight = net.whiten.weight
        assert not weight.requires_grad and not torch.allclose(weight, before)
        assert torch.linalg.matrix_rank(weight.flatten(1)[:12]) == 12  # 12 independent filters (and their negatives)
