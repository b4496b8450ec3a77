"""IMDB sentiment behind one DataModule, on the standard split: the notebook's four architectures (15.8.3 and 15.9.8)
and two that train in minutes on a CPU, fastText and Johnson & Zhang's region CNN.

The notebook's results, on its own 45k/5k re-split: BiLSTM + GloVe 86-88 % (91.1 % with a 75k vocabulary),
self-attention 90.8 %, a Transformer encoder over frozen BERT embeddings 89.2 %, DistilBERT 92.3 % (litlab's targets on
the standard 25k test set: the README). Metrics: `val/acc`, `test/acc`, `test/f1` (macro); figures (in the run
folder and W&B): `test/confusion` and a table of the most confidently misclassified test reviews.

    litlab fit --config configs/imdb_distilbert.yaml --config configs/trainer/gpu.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_texts '["A waste of two hours.", "Loved every minute."]'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torchmetrics.classification import MulticlassF1Score

from lightning_modules.classifier import Classifier
from lightning_modules.components.text_encoders import (
    AttentionClassifier,
    BagOfNgramsClassifier,
    BiLSTMClassifier,
    RegionCNNClassifier,
    real_tokens,
)
from lightning_modules.hub import from_recorded_config, load_pretrained
from lightning_modules.word_vectors import glove_vectors, pretrained_embeddings
from litlab.errors import LitlabError


class ReviewClassifier(Classifier):
    """Training, metrics, W&B figures and predictions shared by the review classifiers; subclasses create `self.net`
    (a module mapping `(ids, lengths)` to logits) in `add_class_layers`, sized by `data_argument` (see `Experiment`).
    Class names come from the data; test batches carry the reviews' `text` for the W&B table of confident errors."""

    prediction_format = "{output} ({probability:.1%}): {input:.70}"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net: nn.Module | None = None
        self._errors: list[Tensor] = []
        self._error_texts: list[list[str]] = []

    def add_class_metrics(self, num_classes: int) -> None:
        super().add_class_metrics(num_classes)
        self.f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.net(ids, lengths)  # (B, classes)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits, y = self(batch["ids"], batch["lengths"]), batch["y"]
        loss, predicted = self.classify(logits, y, stage)
        if stage == "test":
            self.f1(predicted, y)
            self.log("test/f1", self.f1)
            self._keep_confident_errors(logits, y, batch["text"])
        return loss

    def _keep_confident_errors(self, logits: Tensor, y: Tensor, texts: list[str], keep: int = 20) -> None:
        """The batch's most confident wrong predictions, kept on the device (no sync until test end), and its texts."""
        confidence, predicted = logits.detach().float().softmax(1).max(1)
        wrongness = torch.where(predicted != y, confidence, -1.0)
        top = wrongness.topk(min(keep, len(y))).indices
        batch = torch.full_like(top, len(self._error_texts))
        self._errors.append(
            torch.stack([wrongness[top], batch.float(), top.float(), predicted[top].float(), y[top].float()])
        )
        self._error_texts.append(texts)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # the confusion matrix
        (errors, self._errors), (texts, self._error_texts) = (self._errors, []), (self._error_texts, [])
        if not self.reporting() or not errors:
            return
        classes = self.from_data("classes")
        rows = torch.cat(errors, dim=1)  # (5, N): confidence, batch, row in it, predicted, true (this rank's reviews)
        rows = rows[:, rows[0].topk(min(20, rows.size(1))).indices].cpu()
        table = [
            [round(confidence, 4), classes[int(predicted)], classes[int(true)], texts[int(b)][int(i)]]
            for confidence, b, i, predicted, true in rows.T.tolist()
            if confidence >= 0
        ]
        self.report_table("test/confident_errors", ["confidence", "predicted", "true", "review"], table)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        logits = self(batch["ids"], batch["lengths"])
        return self.class_records(logits, batch["name"])  # the text or the file's name, from the batch


class WordClassifier(ReviewClassifier):
    """A review classifier trained from scratch over word (or word-piece) ids, optionally on pretrained vectors.

    Args:
        arch: "bilstm" (bidirectional LSTM, padding never read), "attention" (Transformer encoder layers, masked mean
            pooling), "bag" (fastText: the mean of word and hashed word n-gram embeddings, then a linear layer) or
            "region_cnn" (Johnson & Zhang's seq-CNN: a convolution over the one-hot words of each `ngrams`-word
            window, each feature map's maximum over the review, a linear layer).
        embed_dim: embedding size (taken from the vectors when `glove_path` or `embeddings_from` is given); the
            feature maps of the region_cnn.
        hidden: LSTM state size per direction (bilstm), or the encoder layers' feed-forward width (attention).
        layers, heads: recurrent or encoder layers; attention heads.
        positions: add sinusoidal positions, scaled to the embedding (attention).
        pooling: what the head reads (bilstm): "final", both directions' final states, or "max", each feature's
            maximum over the review's words.
        ngrams, buckets: the longest word n-gram and the embedding rows the n-grams are hashed into (bag); ngrams is
            the window's width in words (region_cnn).
        sparse_grads: (bag) a step updates only the embedding rows its batch reads, as fastText's SGD does, with an
            optimizer that takes sparse gradients (SGD, Adagrad, SparseAdam); under DDP, on the gloo backend only.
        dropout: in the head, between layers, and on the embeddings (attention only).
        word_dropout: the share of each training review's words replaced by the unknown word, drawn afresh every step
            (evaluation reads every word).
        attention_dropout: on the attention weights (attention); 0 keeps the CPU on the fused attention kernel, and
            dropping attention weights on a CPU costs about half of each training step.
        adversarial: adversarial training on the embeddings (Miyato et al., 2017): each training review's embedded
            words are also read moved by this L2 distance (over the whole review) in the direction that raises its
            loss most, and the loss is the mean of the clean and the moved reading. 0: off. The embeddings start at
            unit variance per feature, where the paper's 5.0 applies. A step costs about three times as much.
        glove_path: a `glove.6B.<d>d.txt`-style file whose vectors start the word embeddings (words it lacks keep
            their random start); needs `--data.tokenizer=words`.
        embeddings_from: a Hugging Face model (name or folder) whose input embeddings are copied; needs the same
            model's tokenizer as `--data.tokenizer` (notebook 15.9.8: bert-base-uncased).
        freeze_embeddings: keep pretrained vectors fixed.
        vocab_size, pad_id, num_classes: the data's at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    data_arguments = ("vocab_size", "pad_id", "num_classes")

    def __init__(
        self,
        arch: Literal["bilstm", "attention", "bag", "region_cnn"] = "bilstm",
        embed_dim: PositiveInt = 128,
        hidden: int = 128,
        layers: PositiveInt = 1,
        heads: PositiveInt = 4,
        positions: bool = False,
        pooling: Literal["final", "max"] = "final",
        ngrams: PositiveInt = 2,
        buckets: PositiveInt = 2**20,
        sparse_grads: bool = False,
        dropout: ClosedUnitInterval = 0.3,
        word_dropout: ClosedUnitInterval = 0.0,
        attention_dropout: ClosedUnitInterval = 0.0,
        adversarial: NonNegativeFloat = 0.0,
        glove_path: Path | None = None,
        embeddings_from: str | None = None,
        freeze_embeddings: bool = True,
        vocab_size: PositiveInt | None = None,
        pad_id: NonNegativeInt | None = None,
        num_classes: PositiveInt | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if glove_path is not None and embeddings_from is not None:
            raise LitlabError("pass either --model.init_args.glove_path or --model.init_args.embeddings_from, not both")
        if arch == "region_cnn" and (glove_path is not None or embeddings_from is not None):
            raise LitlabError("the region_cnn learns its windows' one-hot weights: it takes no pretrained vectors")
        if sparse_grads and arch != "bag":
            raise LitlabError(f"--model.init_args.sparse_grads=true is for arch bag, not {arch}")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._unknown_id = self.from_data("unknown_id") if self.hparams.word_dropout else None

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        if stage == "train" and self.hparams.word_dropout:
            batch = {**batch, "ids": self.drop_words(batch["ids"], batch["lengths"])}
        if stage == "train" and self.hparams.adversarial:
            return self.adversarial_loss(batch["ids"], batch["lengths"], batch["y"])
        return super()._shared_step(batch, stage)

    def adversarial_loss(self, ids: Tensor, lengths: Tensor, y: Tensor) -> Tensor:
        """The mean of the cross-entropy on the reviews and on their embeddings moved by `adversarial` (L2, per review)
        along the gradient of that loss, the move held fixed (Miyato et al.'s adversarial training)."""
        embedded: list[Tensor] = []

        def keep_embedded(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            embedded.append(out if out.requires_grad else out.requires_grad_())  # frozen vectors: a leaf to move
            return embedded[-1]

        with self.net.embed.register_forward_hook(keep_embedded):  # the hook's handle removes it on leaving
            clean, _ = self.classify(self(ids, lengths), y, "train")
        (grad,) = torch.autograd.grad(clean, embedded[0], retain_graph=True)
        norm = torch.linalg.vector_norm(grad, dim=list(range(1, grad.dim())), keepdim=True).clamp_min(1e-12)
        move = self.hparams.adversarial * grad / norm  # zero where a review has padding: it never reaches the loss
        with self.net.embed.register_forward_hook(lambda module, args, out: out + move):
            moved = F.cross_entropy(self(ids, lengths), y)
        self.log("train/adversarial_loss", moved, batch_size=len(y))
        return (clean + moved) / 2

    def drop_words(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """`ids` with a random `word_dropout` share of each review's words (never its padding) made unknown."""
        dropped = real_tokens(ids, lengths) & (torch.rand(ids.shape, device=ids.device) < self.hparams.word_dropout)
        return ids.masked_fill(dropped, self._unknown_id)

    def prepare_data(self) -> None:
        if self.hparams.embeddings_from and self.hparams.vocab_size is None and self.trainer.state.fn == "fit":
            from transformers import AutoModel

            load_pretrained(AutoModel, self.hparams.embeddings_from)  # rank 0 fills the cache

    def add_class_layers(self, classes: int) -> None:
        hp = self.hparams
        vocab_size, pad_id = self.data_argument("vocab_size"), self.data_argument("pad_id")
        vectors = None
        if hp.vocab_size is None:  # the first fit: pretrained vectors from files; their width is the embedding's
            if hp.glove_path is not None:
                vectors = glove_vectors(Path(hp.glove_path), self.from_data("words_vocab").words, vocab_size)
            elif hp.embeddings_from is not None:
                vectors = pretrained_embeddings(hp.embeddings_from, vocab_size)
            if vectors is not None:
                self.learned["embed_dim"] = vectors.size(1)
        embed_dim = self.learned.get("embed_dim", hp.embed_dim)
        if hp.arch == "bilstm":
            self.net = BiLSTMClassifier(
                vocab_size, embed_dim, hp.hidden, hp.layers, classes, hp.dropout, pad_id, hp.pooling
            )
        elif hp.arch == "bag":
            self.net = BagOfNgramsClassifier(
                vocab_size, embed_dim, classes, hp.ngrams, hp.buckets, hp.dropout, pad_id, hp.sparse_grads
            )
        elif hp.arch == "region_cnn":
            self.net = RegionCNNClassifier(vocab_size, embed_dim, classes, hp.ngrams, hp.dropout, pad_id)
        else:
            self.net = AttentionClassifier(
                vocab_size, embed_dim, hp.heads, hp.layers, hp.hidden, classes, hp.dropout, hp.positions,
                hp.attention_dropout, pad_id=pad_id,
            )  # fmt: skip
        pretrained = hp.glove_path is not None or hp.embeddings_from is not None
        if vectors is not None:
            with torch.no_grad():
                found = ~vectors.isnan().any(1)  # rows the vectors cover
                self.net.embed.weight[: len(vectors)][found] = vectors[found]  # (bag: the n-gram rows follow)
            if hp.arch == "attention":
                self.net.scale_positions_to_embedding()
        if pretrained and hp.freeze_embeddings:
            self.net.embed.weight.requires_grad_(False)


class PretrainedClassifier(ReviewClassifier):
    """A Hugging Face sequence classifier fine-tuned end to end (DistilBERT, BERT, ...), with AdamW and linear
    warmup/decay sized by the Trainer's total optimizer steps (gradient accumulation included).

    The pretrained weights are fetched (rank 0, `prepare_data`) and loaded for the first `fit` only; the model's
    config is then recorded (`hf_config`), so test/predict from a checkpoint rebuild it without the hub.

    Args:
        pretrained: model name on the hub, or a local folder.
        num_classes, hf_config: the data's class count and the model's config, recorded at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).

    With `--lora` (`imdb_distilbert_lora`): adapters on the attention's query and value projections (DistilBERT's
    `q_lin`/`v_lin`, BERT's `query`/`value`), and the new classification head trained whole.
    """

    lora_targets = ("q_lin", "v_lin", "query", "value")
    lora_train_fully = ("pre_classifier", "classifier")

    def __init__(
        self,
        pretrained: str = "distilbert-base-uncased",
        num_classes: PositiveInt | None = None,
        hf_config: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

    def prepare_data(self) -> None:
        if self.hparams.hf_config is None and self.trainer.state.fn == "fit":
            from transformers import AutoModelForSequenceClassification

            load_pretrained(AutoModelForSequenceClassification, self.hparams.pretrained)  # rank 0 fills the cache

    def add_class_layers(self, num_classes: int) -> None:
        from transformers import AutoModelForSequenceClassification

        hp = self.hparams
        if hp.hf_config is None:  # the first fit
            classes = self.from_data("classes")
            labels = {"id2label": dict(enumerate(classes)), "label2id": {c: i for i, c in enumerate(classes)}}
            self.net = load_pretrained(
                AutoModelForSequenceClassification, hp.pretrained, num_labels=len(classes), **labels
            )
            self.learned["hf_config"] = self.net.config.to_diff_dict()
        else:
            self.net = from_recorded_config(AutoModelForSequenceClassification, hp.hf_config)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        mask = real_tokens(ids, lengths)  # (B, T)
        return self.net(input_ids=ids, attention_mask=mask.long()).logits  # (B, classes)
