"""What both detectors share (`fast_rcnn.FastRCNN`, `fast_rcnn.FasterRCNN`): COCO-style mAP, drawn validation boxes
(figures/ and W&B), predictions in the original image's pixels, each image drawn with its boxes (`DrawnDetections`),
and the class layers sized by the data."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from litlab.experiment import Experiment, per_stage
from litlab.runs import run_dir


def wandb_boxes(found: dict[str, Tensor], caption: str, size: int, classes: dict[int, str]) -> dict:
    """Boxes (pixels of a `size` square image) as a `wandb.Image` box group."""
    data = [
        {
            "position": dict(zip(("minX", "minY", "maxX", "maxY"), (box / size).tolist())),
            "class_id": int(label),
            "box_caption": caption,
        }
        for box, label in zip(found["boxes"].float().cpu(), found["labels"].cpu())
    ]
    return {"box_data": data, "class_labels": classes}


def draw_boxes(
    picture: Image.Image, boxes: list[list[float]], captions: list[str], colour: tuple[int, int, int], width: int = 2
) -> Image.Image:
    """The picture with each box (x1, y1, x2, y2 pixels) outlined and its caption written inside its corner."""
    draw = ImageDraw.Draw(picture)
    for box, caption in zip(boxes, captions):
        draw.rectangle(box, outline=colour, width=width)
        draw.text((box[0] + 3, box[1] + 2), caption, fill=colour)
    return picture


def box_captions(found: dict[str, Tensor], names: list[str]) -> tuple[list[list[float]], list[str]]:
    """Boxes as lists and their captions: the class name (label 1 is names[0]) and, for detections, the score."""
    labels = found["labels"].cpu().tolist()
    captions = [names[int(label) - 1] for label in labels]
    if "scores" in found:
        captions = [f"{c} {s:.2f}" for c, s in zip(captions, found["scores"].cpu().tolist())]
    return found["boxes"].float().cpu().tolist(), captions


class Detector(Experiment):
    """What both detectors share: mAP metrics, drawn validation boxes, predictions in original pixels, drawn.
    Subclasses implement `detect(batch) -> list of {"boxes", "scores", "labels"}` in resized-image pixels and
    `add_class_layers(num_classes)`, the layers sized by the data's class count (`configure_model`), call
    `add_map_metrics` in their constructor and `evaluate` in `_shared_step` outside training."""

    monitor, monitor_mode = "val/map_50", "max"
    prediction_format = "{input}: {summary}"
    shown_score = 0.5  # detections printed per image (all above score_threshold are written)
    data_arguments = ("num_classes",)

    def add_class_layers(self, num_classes: int) -> None:
        raise NotImplementedError

    def build(self) -> None:
        self.add_class_layers(self.data_argument("num_classes"))

    def add_map_metrics(self) -> None:
        self.map = per_stage(lambda: MeanAveragePrecision(box_format="xyxy", iou_type="bbox"))

    def detect(self, batch: dict) -> list[dict[str, Tensor]]:
        raise NotImplementedError

    def evaluate(self, batch: dict, stage: str, detections: list[dict[str, Tensor]]) -> None:
        """Detections of a batch against its ground truth, into the stage's mAP; the epoch's first few are drawn."""
        truth = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
        self.map[stage].update(detections, truth)
        if stage == "val":
            self.keep_for_figures(shown=list(zip(batch["images"][:4], detections, truth)))

    def _log_map(self, stage: str) -> None:
        scores = self.map[stage].compute()  # COCO evaluation once per epoch, summed over DDP ranks
        self.map[stage].reset()
        self.log(f"{stage}/map_50", scores["map_50"], prog_bar=True, sync_dist=False)
        if stage == "test":
            self.log("test/map", scores["map"])

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        if self.figure_batch is None:
            return
        shown = self.figure_batch["shown"]
        names = self.from_data("classes")
        classes = {i + 1: c for i, c in enumerate(names)}
        size = shown[0][0].shape[-1]  # the square the images were resized to
        pictures = [(image.permute(1, 2, 0).cpu().numpy(), detected, truth) for image, detected, truth in shown]
        drawn = []  # the file's picture: ground truth in green, detections above shown_score in red
        for picture, detected, truth in pictures:
            confident = detected["scores"] >= self.shown_score
            image = draw_boxes(Image.fromarray(picture), *box_captions(truth, names), (40, 200, 40))
            shown_found = {key: detected[key][confident] for key in ("boxes", "labels", "scores")}
            drawn.append(np.asarray(draw_boxes(image, *box_captions(shown_found, names), (230, 30, 30))))
        wandb_images = None
        if self.wandb_run() is not None:
            import wandb

            wandb_images = [
                wandb.Image(
                    picture,
                    boxes={
                        "predictions": wandb_boxes(detected, "pred", size, classes),
                        "ground_truth": wandb_boxes(truth, "true", size, classes),
                    },
                )
                for picture, detected, truth in pictures
            ]
        captions = ["green: true, red: detected"] * len(drawn)
        self.report_images("val/detections", drawn, captions, wandb_images)

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        classes, size = self.from_data("classes"), batch["images"].shape[-1]
        records = []
        for name, (width, height), found in zip(batch["name"], batch["size"], self.detect(batch)):
            scale = torch.tensor([width / size, height / size] * 2)
            boxes = (found["boxes"].float().cpu() * scale).round(decimals=1)
            objects = [
                {"class": classes[int(c) - 1], "score": round(float(s), 4), "box": b.tolist()}
                for b, s, c in zip(boxes, found["scores"].cpu(), found["labels"].cpu())
            ]
            confident = [o for o in objects if o["score"] >= self.shown_score]
            summary = "; ".join(f"{o['class']} {o['score']:.2f} at {[round(v) for v in o['box']]}" for o in confident)
            records.append(
                {"input": name, "output": objects, "summary": summary or f"nothing above {self.shown_score}"}
            )
        return records

    def configure_callbacks(self) -> list[L.Callback]:
        return [DrawnDetections(self.shown_score)]


class DrawnDetections(L.Callback):
    """`litlab predict` of a detector: each input image with its detections above `shown_score` drawn, as
    `detections/<name>.png` beside the run's `predictions.jsonl`."""

    def __init__(self, shown_score: float) -> None:
        self.shown_score = shown_score
        self.folder: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict":
            self.folder = run_dir(trainer) / "detections"

    def on_predict_batch_end(self, trainer, pl_module, outputs: list[dict], batch, batch_idx: int, dataloader_idx=0):
        self.folder.mkdir(parents=True, exist_ok=True)
        for record in outputs:
            confident = [o for o in record["output"] if o["score"] >= self.shown_score]
            with Image.open(record["input"]) as image:
                picture = image.convert("RGB")
            captions = [f"{o['class']} {o['score']:.2f}" for o in confident]
            draw_boxes(picture, [o["box"] for o in confident], captions, (255, 0, 0), width=3)
            picture.save(self.folder / f"{Path(record['input']).stem}.png")
