"""Spelling errors injected into clean English text, for sequence-to-sequence correction (notebook 15.9.3).

The text is any English text: local files (`text_files`) or downloads (`urls`; default, the Project Gutenberg *Jane
Eyre* of the character models, read and fetched by the same code). It is cut into segments of 1-3 sentences by a
regex (no downloaded NLTK models); a repeated sentence is kept once, then segments are split into train/val/test, so
no source sentence is in two splits (the notebook drew its 110k samples from a few hundred segments, and tested on
segments it had trained on).

Noise (`spelling_noise`) follows the notebook's rules, each at its own rate; `clean_fraction` of the inputs stay
correct, so the model learns to leave good text alone. Training noise is drawn afresh each epoch (deterministic given
`seed` and the epoch: the training loader is rebuilt every epoch); val/test noise is fixed.

Tokenizer: a Hugging Face one by name (`facebook/bart-base`), or `train`: a byte-level BPE trained on the training
segments here, kept in the checkpoint (`tokenizers.train_bpe`).
"""

from __future__ import annotations

import random
from pathlib import Path

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.data_module import DataModule, Strings, index_tensor
from datamodules.in_memory import gather
from datamodules.spelling_noise import add_noise, make_segments
from datamodules.text_batches import Ragged, length_batches
from datamodules.texts import corpus_files, fetch_corpus, read_corpus, read_predict_file
from datamodules.tokenizers import HubTokenizer, bpe_tokenizer, train_bpe
from litlab.errors import LitlabError


class Pairs(Dataset):
    """(noisy input, clean target) token pairs; a batch is `{"ids", "lengths", "labels" (padded with -100),
    "index", **texts}`, each padded to its longest sequence (a multiple of 8); `texts`: list columns (the input and
    target segments as text) that travel with each batch."""

    def __init__(self, inputs: Ragged, targets: Ragged, pad_id: int, **texts: list[str]) -> None:
        self.inputs, self.targets, self.pad_id, self.texts = inputs, targets, pad_id, texts
        self.lengths = inputs.lengths  # what batches are bucketed by

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        index = index_tensor(indices)
        ids, lengths = self.inputs.batch(index, self.pad_id, multiple=8)
        labels, _ = self.targets.batch(index, -100, multiple=8)
        return {
            "ids": ids,
            "lengths": lengths,
            "labels": labels,
            "index": index,
            **{k: gather(v, index) for k, v in self.texts.items()},
        }


class SpellingData(DataModule):
    """Clean text segments and their noisy copies as token batches (see the module docstring).

    Args:
        text_files: local UTF-8 texts (Project Gutenberg headers are stripped); when given, `urls` is ignored.
        urls: texts to download into `data_dir` in `prepare_data` (default: Jane Eyre).
        data_dir: where downloads go.
        tokenizer: a Hugging Face tokenizer name/folder, or "train" (a byte-level BPE of `vocab_size` trained on the
            training segments).
        vocab_size: size of a trained tokenizer.
        max_sentences, max_chars: a segment's sentences (1 to max_sentences) and most characters.
        val_fraction, test_fraction: shares of the segments held out; seed: the split's and the noise's generator.
        verb_rate, plural_rate, punctuation_rate, replace_rate, swap_rate, lowercase_rate: per word (or mark) rates.
        clean_fraction: inputs left without errors.
        max_len: tokens kept per sequence.
        batch_size, eval_batch_size, num_workers: see `DataModule`.
        predict_texts, predict_files: text to correct with `litlab predict` (strings, or files with one per line).

    What a model may read (`Experiment.from_data`): `tokenizer`, `vocab_size`. Validation and test batches carry
    their segments as text (`source`: noisy, `target`: clean), predict batches the inputs as given (`source`).
    """

    def __init__(
        self,
        text_files: list[Path] | None = None,
        urls: list[str] | None = None,
        data_dir: Path = Path("data"),
        tokenizer: str = "facebook/bart-base",
        vocab_size: PositiveInt = 4000,
        max_sentences: PositiveInt = 3,
        max_chars: PositiveInt = 300,
        val_fraction: ClosedUnitInterval = 0.05,
        test_fraction: ClosedUnitInterval = 0.05,
        seed: int = 42,
        verb_rate: ClosedUnitInterval = 0.1,
        plural_rate: ClosedUnitInterval = 0.1,
        punctuation_rate: ClosedUnitInterval = 0.1,
        replace_rate: ClosedUnitInterval = 0.03,
        swap_rate: ClosedUnitInterval = 0.03,
        lowercase_rate: ClosedUnitInterval = 0.1,
        clean_fraction: ClosedUnitInterval = 0.1,
        max_len: PositiveInt = 128,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        predict_texts: Strings | None = None,
        predict_files: Strings | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.segments: dict[str, list[str]] = {}
        self.noisy: dict[str, list[str]] = {}
        self._tokenizer = None
        self._trained: str | None = None  # the BPE `_tokenizer` was read from
        self._fixed: dict[str, Pairs] = {}

    @property
    def rates(self) -> dict[str, float]:
        hp = self.hparams
        return {
            "verb": hp.verb_rate,
            "plural": hp.plural_rate,
            "punctuation": hp.punctuation_rate,
            "replace": hp.replace_rate,
            "swap": hp.swap_rate,
            "lowercase": hp.lowercase_rate,
        }

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer: the one named, or the BPE trained by `fit` (kept in checkpoints)."""
        if self.hparams.tokenizer != "train":
            self._tokenizer = self._tokenizer or HubTokenizer(self.hparams.tokenizer).tokenizer
        elif "tokenizer" not in self.learned:
            raise LitlabError("the tokenizer is trained by `fit` and stored in its checkpoint: pass --ckpt_path")
        elif self._tokenizer is None or self._trained != self.learned["tokenizer"]:  # new, or a checkpoint's
            self._tokenizer, self._trained = bpe_tokenizer(self.learned["tokenizer"]), self.learned["tokenizer"]
        return self._tokenizer

    def _files(self) -> list[Path]:
        return corpus_files(self.hparams.text_files, self.hparams.urls, self.hparams.data_dir)

    def prepare_data(self) -> None:
        fetch_corpus(self.hparams.text_files, self.hparams.urls, self.hparams.data_dir)
        if self.hparams.tokenizer != "train":
            HubTokenizer(self.hparams.tokenizer)  # rank 0 fills the cache

    def noise(self, texts: list[str], stream: int) -> list[str]:
        """Noisy copies of `texts`, the same for the same seed and stream (the epoch; -1 val, -2 test)."""
        rng = random.Random(self.hparams.seed * 1_000_003 + stream)
        clean = self.hparams.clean_fraction
        return [text if rng.random() < clean else add_noise(text, rng, self.rates) for text in texts]

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.segments:
            return
        hp = self.hparams
        segments = make_segments(read_corpus(self._files()), random.Random(hp.seed), hp.max_sentences, hp.max_chars)
        random.Random(hp.seed).shuffle(segments)
        n_val, n_test = int(len(segments) * hp.val_fraction), int(len(segments) * hp.test_fraction)
        if min(n_val, n_test, len(segments) - n_val - n_test) < 1:
            raise LitlabError(f"{len(segments)} segments are too few to split into train, val and test")
        self.segments = {
            "val": segments[:n_val],
            "test": segments[n_val : n_val + n_test],
            "train": segments[n_val + n_test :],
        }
        self.noisy = {"val": self.noise(self.segments["val"], -1), "test": self.noise(self.segments["test"], -2)}
        if hp.tokenizer == "train" and "tokenizer" not in self.learned:
            self.learned["tokenizer"] = train_bpe(self.segments["train"], hp.vocab_size)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: list[str]) -> Ragged:
        return Ragged.from_lists(self.tokenizer(texts, truncation=True, max_length=self.hparams.max_len)["input_ids"])

    def pairs(self, noisy: list[str], clean: list[str], **texts: list[str]) -> Pairs:
        return Pairs(self.encode(noisy), self.encode(clean), self.tokenizer.pad_token_id, **texts)

    def _loader(self, dataset: Pairs, train: bool) -> DataLoader:
        size = self.batch_size if train else self.eval_batch_size
        return self.loader(dataset, train, batch_sampler=length_batches(dataset, size, train))

    def train_dataloader(self) -> DataLoader:
        # rebuilt every epoch (the config sets `reload_dataloaders_every_n_epochs: 1`): this epoch's noise
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.noisy["train"] = self.noise(self.segments["train"], epoch)
        return self._loader(self.pairs(self.noisy["train"], self.segments["train"]), train=True)

    def _evaluation(self, split: str) -> DataLoader:
        if split not in self._fixed:
            noisy, clean = self.noisy[split], self.segments[split]
            self._fixed[split] = self.pairs(noisy, clean, source=noisy, target=clean)  # texts to score against
        return self._loader(self._fixed[split], train=False)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation("test")

    def predict_inputs(self) -> list[str]:
        texts = list(self.hparams.predict_texts or [])
        for file in self.hparams.predict_files or []:
            texts += [line.strip() for line in read_predict_file(file).splitlines() if line.strip()]
        if not texts:
            raise LitlabError(
                "nothing to predict: pass --data.predict_texts '[\"I recieved it.\"]' or --data.predict_files"
            )
        for text in texts:
            if not text.strip():
                raise LitlabError("--data.predict_texts: an input is empty")
        return texts

    def predict_dataloader(self) -> DataLoader:
        texts = self.predict_inputs()
        inputs = self.encode(texts)
        dataset = Pairs(inputs, inputs, self.tokenizer.pad_token_id, source=texts)
        return self.loader(dataset, batch_sampler=length_batches(dataset, self.eval_batch_size, False, bucket=False))
