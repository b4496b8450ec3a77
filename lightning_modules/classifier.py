"""What every classifier shares (images, reviews): cross-entropy, `val/acc` and `test/acc`, the test confusion matrix
(W&B `test/confusion`) and predictions as class name and probability. Class names come from the DataModule
(`classes`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from litlab.experiment import Experiment, per_stage


class Classifier(Experiment):
    """Subclasses create the layers the class count sizes in `add_class_layers` (the count is the data's, see
    `Experiment.data_argument`; `build` adds the class metrics beside them) and call `classify` in `_shared_step`."""

    monitor, monitor_mode = "val/acc", "max"
    data_arguments = ("num_classes",)

    def add_class_layers(self, num_classes: int) -> None:
        raise NotImplementedError

    def build(self) -> None:
        num_classes = self.data_argument("num_classes")
        self.add_class_layers(num_classes)
        self.add_class_metrics(num_classes)

    def add_class_metrics(self, num_classes: int) -> None:
        # the share of correct predictions (torchmetrics' default, "macro", would average the per-class recalls)
        accuracy = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.acc = per_stage(lambda: MulticlassAccuracy(**accuracy))
        self.confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)

    def classify(
        self, logits: Tensor, y: Tensor, stage: str, label_smoothing: float = 0.0
    ) -> tuple[Tensor, Tensor | None]:
        """The cross-entropy (logged) and, outside training, the predicted classes, counted into `{stage}/acc` and
        in test into the confusion matrix."""
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        self.log_loss(stage, loss, batch_size=len(y))
        if stage == "train":
            return loss, None
        predicted = logits.argmax(1)
        self.acc[stage](predicted, y)
        self.log(f"{stage}/acc", self.acc[stage], prog_bar=True)
        if stage == "test":
            self.confusion(predicted, y)
        return loss, predicted

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()  # (true, predicted) counts, summed over DDP ranks
        self.confusion.reset()
        self.report_confusion("test/confusion", matrix, self.from_data("classes"))

    def class_records(self, logits: Tensor, inputs: list[str]) -> list[dict]:
        """One prediction record per row of `logits`: its input (as the user gave it), class name and probability."""
        classes = self.from_data("classes")
        probability, predicted = logits.softmax(1).max(1)
        return [
            {"input": given, "output": classes[c], "probability": round(p, 6)}
            for given, c, p in zip(inputs, predicted.tolist(), probability.float().tolist())
        ]
