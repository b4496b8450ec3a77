"""Spelling correction with BART, measured on what `generate()` returns (notebook 15.9.3).

The notebook fine-tuned `facebook/bart-base` and reported 98 % exact match after two epochs, but its test segments
were also in training and "exact match" was a teacher-forced argmax. Here val/test segments are held out
(`datamodules.spelling`) and every metric is computed on generated text: `val/exact_match`, `test/exact_match` (the
whole segment), `test/word_acc` (share of the target's words in the longest common word sequence), `*/cer`
(character error rate); the same for the copy-the-input baseline (`*/copy_exact_match`, `*/copy_cer`,
`test/copy_word_acc`), so the figures say what the model adds.

    litlab fit --config configs/spell_bart.yaml --config configs/trainer/gpu.yaml
    litlab predict --ckpt_path <best.ckpt> --data.predict_texts '["She recieve the leter yesterday."]'
"""

from __future__ import annotations

import difflib

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate

from lightning_modules.components.text_encoders import real_tokens
from lightning_modules.hub import from_recorded_config, load_pretrained
from litlab.experiment import Experiment, per_stage


def word_accuracy(output: str, target: str) -> float:
    """Share of the target's words found, in order, in the output (longest common subsequence of words)."""
    words = target.split()
    matcher = difflib.SequenceMatcher(a=output.split(), b=words, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / max(1, len(words))


def mark_changes(before: str, after: str) -> tuple[str, list[str]]:
    """`after` with each changed run of words shown as `[before→after]`, and the list of those changes."""
    old, new = before.split(), after.split()
    out, changes = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(" ".join(new[j1:j2]))
        else:
            changes.append(f"{' '.join(old[i1:i2])}→{' '.join(new[j1:j2])}")
            out.append(f"[{changes[-1]}]")
    return " ".join(part for part in out if part), changes


class SpellCorrector(Experiment):
    """A BART encoder-decoder that rewrites a noisy segment as the clean one.

    Args:
        pretrained: a Hugging Face BART (name or folder) to fine-tune, or None for a new BART of the sizes below,
            randomly initialised with the data's vocabulary (the offline `spell_bart_tiny` config).
        d_model, layers, heads, ffn_dim, dropout: the new BART's sizes (encoder and decoder alike).
        num_beams: beams of `generate()` for val/test/predict.
        logged_examples: validation segments shown each epoch (figures/val_examples.txt, W&B) (input / output / target).
        hf_config: the model's config, recorded at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/exact_match", "max"
    prediction_format = "{output}  ({changes})"

    def __init__(
        self,
        pretrained: str | None = "facebook/bart-base",
        d_model: PositiveInt = 256,
        layers: PositiveInt = 3,
        heads: PositiveInt = 4,
        ffn_dim: PositiveInt = 1024,
        dropout: ClosedUnitInterval = 0.1,
        num_beams: PositiveInt = 1,
        logged_examples: NonNegativeInt = 8,
        hf_config: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net: nn.Module | None = None
        self.exact, self.copy_exact = per_stage(MeanMetric), per_stage(MeanMetric)
        self.cer, self.copy_cer = per_stage(CharErrorRate), per_stage(CharErrorRate)
        self.word_acc, self.copy_word_acc = MeanMetric(), MeanMetric()

    def build(self) -> None:
        from transformers import BartConfig, BartForConditionalGeneration

        hp = self.hparams
        if hp.hf_config is not None:  # from a checkpoint: its weights arrive when it is restored
            self.net = from_recorded_config(BartForConditionalGeneration, hp.hf_config)
            return
        tokenizer = self.from_data("tokenizer")
        if hp.pretrained is not None:
            self.net = load_pretrained(BartForConditionalGeneration, hp.pretrained)
        else:
            ids = {name: getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
            config = BartConfig(
                vocab_size=len(tokenizer),
                d_model=hp.d_model,
                encoder_layers=hp.layers,
                decoder_layers=hp.layers,
                encoder_attention_heads=hp.heads,
                decoder_attention_heads=hp.heads,
                encoder_ffn_dim=hp.ffn_dim,
                decoder_ffn_dim=hp.ffn_dim,
                dropout=hp.dropout,
                max_position_embeddings=512,
                pad_token_id=ids["pad"],
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                decoder_start_token_id=ids["eos"],
                forced_bos_token_id=ids["bos"],
                forced_eos_token_id=ids["eos"],
            )
            self.net = BartForConditionalGeneration(config)
        self.learned["hf_config"] = self.net.config.to_diff_dict()

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Generated token ids (B, T') for padded inputs (B, T)."""
        mask = real_tokens(ids, lengths)
        return self.net.generate(
            input_ids=ids,
            attention_mask=mask.long(),
            num_beams=self.hparams.num_beams,
            max_new_tokens=ids.size(1) + 16,
            do_sample=False,
        )

    def decode(self, ids: Tensor) -> list[str]:
        """Generated ids (B, T') as text, with the data's tokenizer."""
        return [text.strip() for text in self.from_data("tokenizer").batch_decode(ids, skip_special_tokens=True)]

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        ids, lengths, labels = batch["ids"], batch["lengths"], batch["labels"]
        mask = real_tokens(ids, lengths)
        loss = self.net(input_ids=ids, attention_mask=mask.long(), labels=labels).loss  # teacher-forced, -100 ignored
        self.log_loss(stage, loss, batch_size=len(ids))
        if stage != "train":
            self._score(batch, stage)
        return loss

    def _score(self, batch: dict[str, Tensor], stage: str) -> None:
        """Metrics on generated text against the clean segment, and the copy-the-input baseline beside them."""
        inputs, targets = batch["source"], batch["target"]
        outputs = self.decode(self(batch["ids"], batch["lengths"]))
        self.exact[stage](torch.tensor([o == t for o, t in zip(outputs, targets)], dtype=torch.float))
        self.copy_exact[stage](torch.tensor([i == t for i, t in zip(inputs, targets)], dtype=torch.float))
        self.log(f"{stage}/exact_match", self.exact[stage], prog_bar=True, batch_size=len(targets))
        self.log(f"{stage}/copy_exact_match", self.copy_exact[stage], batch_size=len(targets))
        self.cer[stage](outputs, targets)
        self.copy_cer[stage](inputs, targets)
        self.log(f"{stage}/cer", self.cer[stage], batch_size=len(targets))
        self.log(f"{stage}/copy_cer", self.copy_cer[stage], batch_size=len(targets))
        if stage == "test":
            self.word_acc(torch.tensor([word_accuracy(o, t) for o, t in zip(outputs, targets)]))
            self.copy_word_acc(torch.tensor([word_accuracy(i, t) for i, t in zip(inputs, targets)]))
            self.log("test/word_acc", self.word_acc, batch_size=len(targets))
            self.log("test/copy_word_acc", self.copy_word_acc, batch_size=len(targets))
        elif self.hparams.logged_examples:
            self.keep_for_figures(rows=list(zip(inputs, outputs, targets))[: self.hparams.logged_examples])

    def on_validation_epoch_end(self) -> None:
        if self.figure_batch is not None:
            self.report_table("val/examples", ["input", "output", "target"], self.figure_batch["rows"])

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        records = []
        for given, output in zip(batch["source"], self.decode(self(batch["ids"], batch["lengths"]))):
            marked, changes = mark_changes(given, output)
            records.append(
                {"input": given, "output": output, "marked": marked, "changes": ", ".join(changes) or "no change"}
            )
        return records
