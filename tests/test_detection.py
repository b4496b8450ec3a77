"""Detection: VOC parsing edge cases, image modes, the proposal cache and the notebook's anchors, the RoI head (box
coding, RoI sampling and matching, RoIAlign at the backbone's stride, per-class NMS), R-CNN's crops and what it shares
with Fast R-CNN, data without proposals, and predictions in original pixels with a drawn PNG."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, QUIET, cli, config, fails_in_one_line, tiny
from lightning import Trainer
from PIL import Image
from torchvision.ops import FrozenBatchNorm2d

import datamodules.proposals as proposals_module
from datamodules.fruit_detection import FruitDetectionData
from datamodules.proposals import ProposalCache, anchor_boxes, extra_boxes
from datamodules.synthetic_fruit import voc_xml, write_dataset
from datamodules.voc import parse_voc, read_image, valid_boxes
from lightning_modules.components.detection import losses_without_updates
from lightning_modules.components.roi_head import RoIHead, decode_boxes, encode_boxes, match, sample_rois
from lightning_modules.fast_rcnn import STRIDES, FasterRCNN, FastRCNN
from lightning_modules.rcnn import RCNN
from litlab.errors import LitlabError

CLASSES = ("apple", "banana", "orange")


def test_voc_parsing_edge_cases(tmp_path):
    good = tmp_path / "a.xml"
    good.write_text(voc_xml("a.jpg", 100, 80, [("apple", (10, 10, 50, 40)), ("Orange", (0, 0, 99, 79))]))
    boxes, labels = parse_voc(good, CLASSES)
    assert boxes.tolist() == [[10, 10, 50, 40], [0, 0, 99, 79]] and labels.tolist() == [1, 3]
    with pytest.warns(UserWarning, match="no annotation file"):
        assert parse_voc(tmp_path / "missing.xml", CLASSES) is None
    (tmp_path / "bad.xml").write_text("<annotation><object><name>apple")
    with pytest.warns(UserWarning, match="malformed"):
        assert parse_voc(tmp_path / "bad.xml", CLASSES) is None
    (tmp_path / "nobox.xml").write_text("<annotation><object><name>apple</name></object></annotation>")
    with pytest.warns(UserWarning, match="malformed"):
        assert parse_voc(tmp_path / "nobox.xml", CLASSES) is None
    (tmp_path / "pear.xml").write_text(voc_xml("p.jpg", 100, 80, [("pear", (1, 1, 5, 5))]))
    with pytest.raises(LitlabError, match="'pear' is not one of"):
        parse_voc(tmp_path / "pear.xml", CLASSES)


def test_boxes_outside_or_empty_are_clipped_or_dropped():
    boxes = torch.tensor([[-5.0, 10, 50, 90], [20, 20, 20, 60], [1, 1, 9, 9]])
    with pytest.warns(UserWarning) as caught:
        kept, labels = valid_boxes(boxes, torch.tensor([1, 2, 3]), 40, 80, "x.jpg")
    assert kept.tolist() == [[0, 10, 40, 80], [1, 1, 9, 9]] and labels.tolist() == [1, 3]
    assert any("clipped" in str(w.message) for w in caught) and any("zero area" in str(w.message) for w in caught)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "RGB"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / "x.jpg"
    Image.new("RGB", (60, 40), (200, 30, 35)).convert(mode).save(path, format="PNG")  # a PNG named .jpg, as found
    image, original = read_image(path, 32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and original == (60, 40)


def test_proposal_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    calls = []

    def search(image, mode, max_boxes):
        calls.append(mode)
        return torch.tensor([[0.0, 0, 10, 10]])

    monkeypatch.setattr(proposals_module, "selective_search", search)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    cache = ProposalCache(tmp_path, "fast", 100)
    first = cache.get(image)
    assert torch.equal(cache.get(image), first) and calls == ["fast"]  # read back, not recomputed
    assert len(first) == 1 + len(extra_boxes(64)) and not list(tmp_path.glob("*.tmp"))
    ProposalCache(tmp_path, "quality", 100).get(image)  # other parameters: another key
    other = image.clone()
    other[0, 0, 0] ^= 1
    cache.get(other)  # other pixels: another key
    assert calls == ["fast", "quality", "fast"] and len(list(tmp_path.glob("*.npy"))) == 3


def test_box_encoding_round_trips():
    rois = torch.tensor([[10.0, 20, 50, 80], [0, 0, 99, 99]])
    boxes = torch.tensor([[12.0, 18, 60, 70], [5, 5, 40, 90]])
    torch.testing.assert_close(decode_boxes(rois, encode_boxes(rois, boxes)), boxes)
    assert torch.allclose(encode_boxes(rois, rois), torch.zeros(2, 4), atol=1e-6)


def test_sampled_rois_hold_ground_truth_and_the_foreground_share():
    torch.manual_seed(0)
    boxes, labels = torch.tensor([[10.0, 10, 60, 60]]), torch.tensor([2])
    proposals = torch.cat([boxes + torch.randn(40, 4), torch.rand(200, 4).sort(dim=1).values[:, [0, 1, 2, 3]] * 200])
    proposals[:, 2:] = torch.maximum(proposals[:, 2:], proposals[:, :2] + 2)
    rois = sample_rois(proposals, boxes, labels, count=32, fg_fraction=0.25)
    iou, roi_labels, _ = match(rois, boxes, labels)
    assert len(rois) == 32 and torch.equal(rois[0], boxes[0])
    assert int((roi_labels == 2).sum()) == 8 and (roi_labels[8:] == 0).all() and (iou[8:] < 0.5).all()


def test_training_rois_are_sampled_per_image_and_evaluation_reads_every_proposal():
    head = RoIHead(channels=8, stride=16, num_classes=3, fc_dim=16, rois_per_image=16)
    boxes, labels = [torch.tensor([[10.0, 10, 60, 60]]), torch.zeros(0, 4)], [torch.tensor([2]), torch.zeros(0).long()]
    proposals = [torch.tensor([[11.0, 11, 61, 61], [70, 70, 90, 90]]), torch.tensor([[5.0, 5, 30, 30]])]
    rois, roi_labels, targets = head.rois(proposals, boxes, labels, sample=True)
    assert rois.shape == (32, 5) and rois[:16, 0].eq(0).all() and rois[16:, 0].eq(1).all()
    assert roi_labels[0] == 2 and roi_labels[16:].eq(0).all() and targets.shape == (32, 4)
    rois, roi_labels, _ = head.rois(proposals, boxes, labels, sample=False)
    assert rois[:, 0].tolist() == [0, 0, 1] and roi_labels.tolist() == [2, 0, 0]


@pytest.mark.parametrize("stage", ["layer2", "layer3", "layer4"])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_the_backbone_has_the_stride_and_width_the_head_pools_at(arch, stage):
    model = FastRCNN(arch=arch, weights=None, feature_stage=stage)
    features = model.backbone(torch.zeros(1, 3, 128, 128))
    assert features.shape[1:] == (model.channels, 128 // STRIDES[stage], 128 // STRIDES[stage])


def test_roi_align_tells_regions_apart():
    torch.manual_seed(0)
    head = RoIHead(channels=1, stride=1, num_classes=3, fc_dim=32).eval()
    features = torch.zeros(1, 1, 128, 128)
    features[..., 64:96, 64:96] = 1  # a bright square: its RoI's pooled features differ from a dark RoI's
    logits, deltas = head(features, torch.tensor([[0.0, 64, 64, 95, 95], [0.0, 0, 0, 31, 31]]))
    assert logits.shape == (2, 4) and deltas.shape == (2, 4, 4) and not torch.allclose(logits[0], logits[1])


def test_nms_keeps_one_box_per_object_and_class():
    head = RoIHead(channels=8, stride=16, num_classes=3, fc_dim=32, score_threshold=0.1, nms_iou=0.3)
    rois = torch.tensor([[0.0, 10, 10, 50, 50], [0.0, 12, 12, 52, 52], [1.0, 10, 10, 50, 50], [0.0, 60, 60, 90, 90]])
    logits = torch.full((4, 4), -10.0)
    logits[0, 1], logits[1, 1], logits[2, 1], logits[3, 3] = 5.0, 4.0, 5.0, 3.0  # apple, apple (overlap), apple, orange
    found = head.detections(logits, torch.zeros(4, 4, 4), rois, images=2, size=100)
    assert found[0]["labels"].tolist() == [1, 3] and found[0]["boxes"][0].tolist() == [10, 10, 50, 50]
    assert found[1]["labels"].tolist() == [1]  # the same box in another image is its own detection


def test_default_nms_keeps_touching_fruit_of_one_class():
    """A fifth of the real fruit overlap another of their class at IoU > 0.3: both must be detected, while a
    near-duplicate box of one of them (IoU 0.82) is still suppressed."""
    head = RoIHead(channels=8, stride=16, num_classes=3, fc_dim=32)
    rois = torch.tensor([[0.0, 10, 10, 50, 50], [0.0, 27, 10, 67, 50], [0.0, 14, 10, 54, 50]])  # IoU 0.40, 0.82
    logits = torch.full((3, 4), -10.0)
    logits[:, 1] = torch.tensor([5.0, 4.0, 3.0])
    found = head.detections(logits, torch.zeros(3, 4, 4), rois, images=1, size=100)
    assert found[0]["boxes"].tolist() == [[10, 10, 50, 50], [27, 10, 67, 50]]


def test_fast_rcnn_on_data_without_proposals_is_one_line(capfd):
    fit = ["fit", "--config", config("fruit_fast_rcnn_scratch"), *tiny("fruit_fast_rcnn_scratch"), *QUIET]
    fails_in_one_line(capfd, *fit, "--data.proposals=none", naming="FastRCNN pools the data's region proposals")


def test_predictions_are_in_original_pixels_with_a_drawn_image(tmp_path, capsys):
    small = tiny("fruit_fast_rcnn")
    cli(
        "fit",
        "--config",
        config("fruit_fast_rcnn"),
        *small,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    with Image.open(best.parent.parent / "figures/val_detections.png") as drawn:  # boxes drawn without W&B
        assert drawn.format == "PNG"
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 200), (30, 120, 40)).save(photo)
    cli("predict", "--ckpt_path", best, f"--data.predict_files=[{photo}]", "--model.init_args.score_threshold=0.0")
    out = capsys.readouterr().out
    path = next(line for line in out.splitlines() if line.startswith("predictions written to "))
    (record,) = [json.loads(line) for line in open(path.removeprefix("predictions written to "))]
    assert record["output"] and all(o["class"] in CLASSES for o in record["output"])
    boxes = torch.tensor([o["box"] for o in record["output"]])
    assert boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 200 and boxes[:, 2].max() > 128  # original, not 128 px
    drawn = Path(path.removeprefix("predictions written to ")).parent / "detections" / "photo.png"
    assert Image.open(drawn).size == (640, 200)


def test_missing_dataset_and_bad_class_fail_in_one_line(tmp_path, capfd):
    fit = [
        "fit",
        "--config",
        config("fruit_fast_rcnn"),
        *tiny("fruit_fast_rcnn"),
        "--trainer.logger=false",
    ]
    folder = tmp_path / "voc"
    fails_in_one_line(capfd, *fit, f"--data.data_dir={folder}", "--data.download=false", naming="no VOC train/")
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        Image.new("RGB", (50, 50)).save(folder / split / "a.jpg")
        (folder / split / "a.xml").write_text(voc_xml("a.jpg", 50, 50, [("pear", (1, 1, 20, 20))]))
    fails_in_one_line(capfd, *fit, f"--data.data_dir={folder}", naming="'pear' is not one of")
    (folder / "test" / "a.jpg").rename(folder / "test" / "a.webp")  # test images of another format: none read
    (folder / "test" / "a.xml").write_text(voc_xml("a.webp", 50, 50, [("apple", (1, 1, 20, 20))]))
    (folder / "train" / "a.xml").write_text(voc_xml("a.jpg", 50, 50, [("apple", (1, 1, 20, 20))]))
    fails_in_one_line(capfd, *fit, f"--data.data_dir={folder}", naming=f"{folder / 'test'}: no .jpg, .jpeg or .png")
    assert FIXTURES.is_dir()


def batchnorm_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


def test_faster_rcnn_validation_changes_no_statistics():
    torch.manual_seed(0)
    model = FasterRCNN(weights=None, num_classes=3, image_size=128)  # from scratch: live BatchNorm everywhere
    model.configure_model()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    data = FruitDetectionData(FIXTURES / "fruit", val_size=4, image_size=128, proposals="none", batch_size=2)
    before = batchnorm_state(model)
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    (scores,) = Trainer(accelerator="cpu", limit_val_batches=2, **quiet).validate(model, data, verbose=False)
    assert scores["val/loss"] > 0  # the held-out loss was measured ...
    after = batchnorm_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # ... without changing any running statistic
    rng = torch.get_rng_state()
    with losses_without_updates(model.net, torch.device("cpu")):
        assert model.net.training and not model.net.backbone.body.bn1.training
        torch.rand(3)  # as the proposal samplers draw
    assert torch.equal(torch.get_rng_state(), rng) and not model.net.training  # training's random numbers untouched


def test_faster_rcnn_with_coco_weights_freezes_batchnorm_and_early_stages():
    model = FasterRCNN(weights="COCO_V1", num_classes=3, image_size=128, trainable_backbone_layers=2)
    model.configure_model()  # the weights are fetched in fit only
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.net.roi_heads.modules())
    body = model.net.backbone.body
    learning = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert learning == {"layer3", "layer4"}
    assert all(p.requires_grad for p in model.net.backbone.fpn.parameters())
    with pytest.raises(LitlabError, match="trainable_backbone_layers"):
        FasterRCNN(weights="COCO_V1", num_classes=3, trainable_backbone_layers=6)


def test_kaggle_download_lands_where_every_rank_looks(tmp_path, monkeypatch):
    def download(handle):  # kagglehub unpacks into its own cache: train_zip/train, test_zip/test
        cache = tmp_path / "kagglehub" / handle
        write_dataset(cache / "train_zip", train=4, test=0)
        write_dataset(cache / "test_zip", train=0, test=2)
        return str(cache)

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=download))
    settings = dict(data_dir=tmp_path / "fruit", val_size=1, image_size=64, proposals="none")
    FruitDetectionData(**settings).prepare_data()  # rank 0 only
    other_rank = FruitDetectionData(**settings)  # never ran prepare_data
    other_rank.setup("fit")
    assert len(other_rank.splits["train"]) == 3 and len(other_rank.splits["test"]) == 2


def test_transparent_pixels_are_shown_over_white(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # hidden pixels black, as in some of the Kaggle files
    rgba.paste((200, 30, 35, 255), (10, 10, 30, 30))
    rgba.save(tmp_path / "a.png")
    rgba.convert("P").save(tmp_path / "p.png", transparency=0)
    for name in ("a.png", "p.png"):
        image, _ = read_image(tmp_path / name, 40)
        assert image[:, 0, 0].tolist() == [255, 255, 255] and image[0, 20, 20] > 150 > image[1, 20, 20]


def test_augmentation_moves_boxes_and_proposals_with_the_pixels():
    from datamodules.detection_transforms import augment_detection

    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[0, 16:41, 8:33] = 255  # a red square: pixels 8..32 across, 16..40 down
    box = torch.tensor([[8.0, 16, 32, 40]])
    proposals = torch.cat([box, torch.tensor([[0.0, 0, 63, 63]])])
    moved_somewhere = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out, boxes, labels, props = augment_detection(image, box, torch.tensor([2]), proposals, 0.3, 0.0)
        assert out.shape == image.shape and labels.tolist() == [2]
        x1, y1, x2, y2 = boxes[0].round().int().tolist()
        red = out[0] > 200
        inside = red[y1 : y2 + 1, x1 : x2 + 1]
        assert inside.float().mean() > 0.8 and inside.sum() > 0.9 * red.sum()  # the box frames the red square
        torch.testing.assert_close(props[0], boxes[0])  # the proposal on the box moved with it
        moved_somewhere += not torch.equal(boxes, box)
    assert moved_somewhere >= 15
    torch.manual_seed(0)
    jittered, *_ = augment_detection(image, box, torch.tensor([2]), None, 0.0, 0.5)
    assert not torch.equal(jittered, image) and not torch.equal(jittered, image.flip(-1))  # colours changed


def test_anchor_boxes_are_the_notebooks_grid():
    anchors = anchor_boxes(256, 32)
    assert anchors.shape == (36**2, 4)  # 8 sides on each axis, 36 placements of a side along an axis
    sides = anchors[:, 2:] - anchors[:, :2] + 1
    assert (anchors[:, :2] % 32 == 0).all() and (sides % 32 == 0).all()
    assert anchors.min() == 0 and anchors.max() == 255 and len(anchors.unique(dim=0)) == len(anchors)
    data = FruitDetectionData(FIXTURES / "fruit", image_size=128, val_size=4, proposals="anchors", anchor_step=32)
    data.setup("fit")
    assert all(torch.equal(p, anchor_boxes(128, 32)) for p in data.splits["train"].proposals)


def test_rcnn_crops_are_the_regions_resized():
    model = RCNN(arch="resnet18", weights=None, roi_size=2)  # 32-px crops at layer3's stride
    images = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    images[..., 64:96, 32:96] = 255  # a white 64 x 32 rectangle (x 32..95, y 64..95)
    rois = torch.tensor([[0.0, 32, 64, 95, 95], [0.0, 0, 0, 31, 31], [0.0, 0, 48, 63, 111]])
    crops = model.crops(images, rois)
    white, black = model.standardize(torch.ones(1, 3, 1, 1)), model.standardize(torch.zeros(1, 3, 1, 1))
    assert crops.shape == (3, 3, 32, 32)
    # the rectangle stretched to the square (its edges blend with the next pixel), a black corner, and a larger region
    # shrunk by half: the rectangle in its rows 8-23 and columns 16-31
    torch.testing.assert_close(crops[0][:, 1:-1, 1:-1], white[0].expand(3, 30, 30))
    torch.testing.assert_close(crops[1], black[0].expand(3, 32, 32))
    assert torch.allclose(crops[2][:, 9:23, 18:], white[0]) and torch.allclose(crops[2][:, 9:23, :14], black[0])
    assert torch.allclose(crops[2][:, :7], black[0]) and torch.allclose(crops[2][:, 25:], black[0])


def test_rcnn_labels_crops_as_fast_rcnn_does_and_shares_its_head():
    """R-CNN and Fast R-CNN differ in where features come from, nothing else: RoI sampling and labelling (a crop with
    part of a fruit is background), the loss and the post-processing are the same code."""
    model = RCNN(arch="resnet18", weights=None, roi_size=2, num_classes=3, fc_dim=16, rois_per_image=8)
    model.configure_model()
    assert isinstance(model.head, RoIHead)
    for shared in ("_shared_step", "detect", "setup"):
        assert getattr(RCNN, shared) is getattr(FastRCNN, shared)
    fruit = torch.tensor([[20.0, 20, 59, 59]])
    proposals = [torch.tensor([[22.0, 22, 61, 61], [20, 20, 41, 59], [80, 80, 120, 120]])]  # IoU 0.82, 0.54, 0
    half = torch.tensor([[20.0, 20, 39, 49]])  # a crop with a part of the fruit: IoU 0.36, background
    proposals[0] = torch.cat([proposals[0], half])
    rois, labels, targets = model.head.rois(proposals, [fruit], [torch.tensor([3])], sample=False)
    assert labels.tolist() == [3, 3, 0, 0]
    assert torch.allclose(decode_boxes(rois[:2, 1:], targets[:2]), fruit.expand(2, 4), atol=1e-4)
    logits, deltas = model(torch.zeros(1, 3, 128, 128, dtype=torch.uint8), rois)
    assert logits.shape == (4, 4) and deltas.shape == (4, 4, 4)
    found = model.head.detections(logits, deltas, rois, images=1, size=128)
    assert set(found[0]) == {"boxes", "scores", "labels"}
