"""Speech recognition with CTC (the seed tutorial's section 6): log-mel frames, two strided convolutions, a
bidirectional LSTM and a linear layer per frame, trained with `nn.CTCLoss` on the frame counts after the convolutions
(`components.ctc`).

Metrics, on transcripts decoded greedily or by beam search (`beam_width` > 1): `{stage}/cer`, the token error rate
(digits for spoken digits, characters for LibriSpeech; torchmetrics' `CharErrorRate`), `{stage}/wer` where transcripts
have words, `{stage}/exact_match` over utterances, and `{stage}/single_acc` over recordings scored alone (one spoken
digit). Figures: a validation utterance's log-mel frames with the frames where the greedy path emits a token, and the
test confusion of single recordings. `predict` writes each transcript with its probability under the network (all of
its CTC alignments), and each of the data's `candidates` with its own, by which `SpokenDigitsData.pseudo_labels` keeps
the surest for self-training. Targets and measured figures: the README.

    litlab fit --config configs/speech_ctc.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[one.wav, two.wav]'
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.text import CharErrorRate, WordErrorRate

from lightning_modules.components.ctc import ConvBiLSTM, beam_search, collapse, greedy_paths
from litlab.experiment import Experiment, per_stage


class SpeechCTC(Experiment):
    """A CTC speech recogniser over the data's log-mel frames and alphabet (`n_mels`, `vocab_size`, `tokenizer`).

    Args:
        channels, kernel_size: the two strided convolutions (the seed: 256, 5).
        batch_norm: BatchNorm after each convolution (the seed has none).
        hidden, layers: the bidirectional LSTM (the seed: 512 per direction, 3 layers).
        dropout: after the convolutions, between LSTM layers and before the output layer.
        beam_width: 1 decodes greedily; more runs CTC's prefix beam search with this many prefixes.
        n_mels, vocab_size: the data's at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/cer", "min"
    data_arguments = ("n_mels", "vocab_size")
    prediction_format = "{input}: {output} ({probability:.1%})"
    request_settings = ("beam_width",)

    def __init__(
        self,
        channels: PositiveInt = 256,
        kernel_size: PositiveInt = 5,
        batch_norm: bool = False,
        hidden: PositiveInt = 512,
        layers: PositiveInt = 3,
        dropout: ClosedUnitInterval = 0.0,
        beam_width: PositiveInt = 1,
        n_mels: PositiveInt | None = None,
        vocab_size: PositiveInt | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)

    def build(self) -> None:
        hp, vocab_size = self.hparams, self.data_argument("vocab_size")
        self.net = ConvBiLSTM(
            self.data_argument("n_mels"), vocab_size, hp.channels, hp.kernel_size, hp.hidden, hp.layers, hp.dropout,
            hp.batch_norm,
        )  # fmt: skip
        self.cer, self.wer = per_stage(CharErrorRate), per_stage(WordErrorRate)
        self.exact, self.single = per_stage(MeanMetric), per_stage(MeanMetric)
        self.confusion = MulticlassConfusionMatrix(vocab_size, validate_args=False)  # class 0: not one token

    def forward(self, features: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(features, frames)  # log-probabilities (B, T', V), lengths (B,)

    def transcribe(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        """Transcripts of a batch's log-probabilities: greedy, or by beam search."""
        tokenizer, width = self.from_data("tokenizer"), self.setting("beam_width")
        if width == 1:
            paths = greedy_paths(log_probs, lengths).tolist()  # one copy to the host per batch
            return [tokenizer.decode(collapse(path)) for path in paths]
        return [tokenizer.decode(beam_search(lp[:n], width)) for lp, n in zip(log_probs, lengths.tolist())]

    @staticmethod
    def ctc_loss(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor, **options) -> Tensor:
        """`F.ctc_loss` (blank 0, in fp32) of (B, T', V) log-probabilities and 0-padded (B, L) targets."""
        return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, lengths, target_lengths, blank=0, **options)

    def transcript_probability(self, log_probs: Tensor, lengths: Tensor, texts: list[str]) -> Tensor:
        """(B,) each text's probability given its utterance: the sum over all of its CTC alignments."""
        targets, target_lengths = self.from_data("tokenizer").targets(texts)
        device = lengths.device
        return torch.exp(
            -self.ctc_loss(log_probs, lengths, targets.to(device), target_lengths.to(device), reduction="none")
        )

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        log_probs, lengths = self(batch["features"], batch["frames"])
        loss = self.ctc_loss(log_probs, lengths, batch["targets"], batch["target_lengths"], zero_infinity=True)
        self.log_loss(stage, loss, batch_size=len(lengths))
        if stage != "train":
            self.score(stage, self.transcribe(log_probs, lengths), batch)
            if stage == "val":  # the first batch's first utterance, its path found at the epoch's end
                self.keep_for_figures(features=batch["features"][0, :, : batch["frames"][0]],
                                      log_probs=log_probs[0, : lengths[0]], text=batch["text"][0])  # fmt: skip
        return loss

    def score(self, stage: str, outputs: list[str], batch: dict) -> None:
        """Connected utterances into the error rates and exact match; recordings scored alone into single_acc."""
        single = batch["single"].tolist()
        pairs = [(o, t) for o, t, s in zip(outputs, batch["text"], single) if not s]
        alone = [(o, t) for o, t, s in zip(outputs, batch["text"], single) if s]
        if pairs:
            predicted, truth = map(list, zip(*pairs))
            self.cer[stage](predicted, truth)
            self.exact[stage](torch.tensor([p == t for p, t in pairs], dtype=torch.float))
            self.log(f"{stage}/cer", self.cer[stage], prog_bar=True, batch_size=len(pairs))
            self.log(f"{stage}/exact_match", self.exact[stage], batch_size=len(pairs))
            if any(" " in t for t in truth):
                self.wer[stage](predicted, truth)
                self.log(f"{stage}/wer", self.wer[stage], batch_size=len(pairs))
        if alone:
            self.single[stage](torch.tensor([p == t for p, t in alone], dtype=torch.float))
            self.log(f"{stage}/single_acc", self.single[stage], batch_size=len(alone))
            if stage == "test":
                ids = self.from_data("tokenizer").ids
                predicted = torch.tensor([ids.get(p, 0) if len(p) == 1 else 0 for p, _ in alone])
                self.confusion(predicted.to(self.device), torch.tensor([ids[t] for _, t in alone], device=self.device))

    def on_validation_epoch_end(self) -> None:
        """The kept utterance's log-mel frames (low bands at the bottom) with a red line at each frame where the
        greedy path emits a token (four input frames per output frame)."""
        if self.figure_batch is None:
            return
        features = self.figure_batch["features"].float().cpu()
        path = self.figure_batch["log_probs"].argmax(-1).cpu()  # the greedy path (T',)
        scaled = (features - features.min()) / (features.max() - features.min() + 1e-6)
        picture = np.repeat((scaled.flip(0) * 255).byte().numpy()[..., None], 3, axis=2)  # (n_mels, T, 3)
        emitted = (path != 0) & torch.cat([torch.tensor([True]), path[1:] != path[:-1]])
        stride = features.size(1) / max(1, len(path))
        for frame in torch.nonzero(emitted).flatten().tolist():
            picture[:, min(picture.shape[1] - 1, round(frame * stride)), :] = (230, 30, 30)
        decoded = self.from_data("tokenizer").decode(collapse(path.tolist()))
        picture = np.repeat(np.repeat(picture, 4, axis=0), 2, axis=1)  # legible: 4 px a band, 2 px a frame
        self.report_images("val/alignment", [picture], [f"true: {self.figure_batch['text']} | greedy: {decoded}"])

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()  # (true, predicted) counts over the single recordings
        self.confusion.reset()
        if matrix.sum() > 0:
            names = ["not one", *self.from_data("tokenizer").alphabet]
            self.report_confusion("test/confusion", matrix, names)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        log_probs, lengths = self(batch["features"], batch["frames"])
        outputs = self.transcribe(log_probs, lengths)
        probabilities = self.transcript_probability(log_probs, lengths, outputs).tolist()
        records = [
            {"input": name, "output": text, "probability": p}
            for name, text, p in zip(batch["name"], outputs, probabilities)
        ]
        if candidates := self.from_data("candidates"):  # a closed set of transcripts: each one's probability too
            k = len(candidates)  # one CTC pass over every (utterance, candidate) pair
            each = self.transcript_probability(
                log_probs.repeat_interleave(k, 0), lengths.repeat_interleave(k), list(candidates) * len(outputs)
            )
            for record, row in zip(records, each.view(-1, k).tolist()):
                record["candidates"] = dict(zip(candidates, row))
        return records
