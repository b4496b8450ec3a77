"""Characters of a novel for next-character language models (notebook 15.8.2 and 15.9.9).

The text comes from local files (`text_files`) or URLs (`urls`, downloaded into `data_dir` in `prepare_data`; default:
*Jane Eyre*, see `texts`). `clean` keeps the notebook's alphabet (letters, digits, `,.?`, single spaces), so results
compare with it.

The text is encoded once into one integer tensor and split contiguously: the first `train_fraction` trains, the rest is
halved into val and test, so no window crosses a split boundary and no test character was seen in training. The
vocabulary comes from the training text (id 0: a character unseen there). Training windows of `context_len`
characters start at random positions (one per `context_len` characters per epoch, every position a target);
val/test windows tile their split. With `streams`, each split is instead cut into as many rows as a batch holds (times
the ranks) and consecutive batches continue each row (PyTorch's word_language_model example), so a recurrent model
carries its state from batch to batch: truncated backpropagation through time, every character read with all the text
before it in its row (`char_windows`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.char_windows import JitteredWindows, StreamSampler, TextStreams, contiguous_splits, tiled_windows
from datamodules.data_module import DataModule, Strings
from datamodules.in_memory import TensorColumns
from datamodules.texts import clean_text, corpus_files, fetch_corpus, read_corpus
from litlab.errors import LitlabError


class CharVocab:
    """Characters <-> ids; id 0 stands for any character the training text did not contain."""

    UNKNOWN = 0

    def __init__(self, chars: str) -> None:
        self.chars = chars  # id i+1 is chars[i]
        self._table = torch.zeros(max(map(ord, chars), default=0) + 1, dtype=torch.long)
        self._table[torch.tensor([ord(c) for c in chars], dtype=torch.long)] = torch.arange(1, len(chars) + 1)

    @staticmethod
    def from_text(text: str) -> str:
        """The characters of `text`, sorted: a vocabulary's `chars`."""
        return "".join(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> Tensor:
        """(len(text),) ids, one vectorised lookup."""
        codes = torch.from_numpy(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64))
        known = codes < len(self._table)
        return torch.where(known, self._table[codes.clamp(max=len(self._table) - 1)], self.UNKNOWN)

    def decode(self, ids: Tensor | list[int], unknown: str = "\ufffd") -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else unknown for i in list(map(int, ids)))


class CharCorpusData(DataModule):
    """A text as next-character windows.

    Args:
        text_files: local UTF-8 text files (Project Gutenberg headers are stripped); when given, `urls` is ignored.
        urls: texts to download into `data_dir` in `prepare_data` (default: Jane Eyre).
        data_dir: where downloads go.
        clean: the notebook's alphabet (letters, digits, `,.?`, single spaces); False keeps the raw text.
        context_len: characters a model sees per window.
        train_fraction: leading share of the text used for training; the rest is halved into val and test.
        vocab: the vocabulary's characters; by default built from the training text by `fit` and kept in the
            checkpoint (`learned`), so `predict` needs no text at all.
        jitter: training windows start at a random point of their stretch (False: fixed windows, e.g. to memorise).
        streams: every split read as `batch_size` (eval: `eval_batch_size`) rows per rank side by side, each batch
            continuing the last (`TextStreams`; the training rows start at a random shift each epoch): recurrent
            models carry their state across batches in training and evaluation. False: independent windows from a
            zero state (shuffled and jittered in training).
        prompts: texts to continue with `litlab predict` (an empty prompt starts from a space).
        batch_size, eval_batch_size, num_workers: see `DataModule`.

    What a model may read (`Experiment.from_data`): `vocab` (encode/decode), `vocab_size`, `context_len`, `prompts`; a
    predict batch carries its prompt as given (`prompt`), a stream batch whether it continues the previous one
    (`continues`).
    """

    def __init__(
        self,
        text_files: list[Path] | None = None,
        urls: list[str] | None = None,
        data_dir: Path = Path("data"),
        clean: bool = True,
        context_len: PositiveInt = 128,
        train_fraction: OpenUnitInterval = 0.9,
        vocab: str | None = None,
        jitter: bool = True,
        streams: bool = False,
        prompts: Strings | None = None,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        if vocab is not None:
            self.learned["vocab"] = vocab
        self.text: str | None = None
        self._vocab: CharVocab | None = None
        self._splits: dict[str, Tensor] = {}

    @property
    def vocab(self) -> CharVocab:
        """The characters <-> ids of the training text (or of `--data.vocab`, or of the checkpoint)."""
        chars = self.learned.get("vocab")
        if chars is None:
            raise LitlabError("the vocabulary is built by `fit` from the training text: pass --ckpt_path")
        if self._vocab is None or self._vocab.chars != chars:
            self._vocab, self._splits = CharVocab(chars), {}  # a checkpoint's vocabulary: the splits encode anew
        return self._vocab

    @property
    def context_len(self) -> int:
        """Characters a model reads per window (the GPT's position table at the first fit)."""
        return self.hparams.context_len

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def prompts(self) -> list[str]:
        """Texts a model continues: the configured prompts, cleaned like the text (an empty one is a space), else
        the validation text's opening."""
        if self.hparams.prompts:
            return [(clean_text(p) if self.hparams.clean else p) or " " for p in self.hparams.prompts]
        return [self.vocab.decode(self.splits["val"][:24])]

    @property
    def splits(self) -> dict[str, Tensor]:
        """The text's train/val/test ids, encoded on first use (after a checkpoint's vocabulary is restored)."""
        vocab = self.vocab
        if not self._splits:
            if self.text is None:
                raise LitlabError("no text read yet: the splits exist after setup('fit'|'validate'|'test')")
            self._splits = contiguous_splits(vocab.encode(self.text), self.hparams.train_fraction)
        return self._splits

    def _files(self) -> list[Path]:
        return corpus_files(self.hparams.text_files, self.hparams.urls, self.hparams.data_dir)

    def prepare_data(self) -> None:
        fetch_corpus(self.hparams.text_files, self.hparams.urls, self.hparams.data_dir)

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.text is not None:  # the text is read once per process
            return
        text = read_corpus(self._files())
        self.text = clean_text(text) if self.hparams.clean else text
        if "vocab" not in self.learned:  # the characters of the training text
            training = self.text[: int(len(self.text) * self.hparams.train_fraction)]
            self.learned["vocab"] = CharVocab.from_text(training)

    def _streams(self, split: str, batch_size: int) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        streams = TextStreams(self.splits[split], self.hparams.context_len, batch_size * world, split == "train")
        seed = int(os.getenv("PL_GLOBAL_SEED", 0))  # seed_everything's on every rank, as Lightning's samplers
        sampler = StreamSampler(streams, world, rank, seed)
        return self.loader(streams, split == "train", sampler=sampler, batch_size=batch_size)

    def _evaluation(self, split: str) -> DataLoader:
        """val/test: the split as streams, or as windows that tile it."""
        if self.hparams.streams:
            return self._streams(split, self.eval_batch_size)
        windows = tiled_windows(self.splits[split], self.hparams.context_len)
        return self.loader(TensorColumns({"x": windows[:, :-1], "y": windows[:, 1:]}))

    def train_dataloader(self) -> DataLoader:
        if self.hparams.streams:
            return self._streams("train", self.batch_size)
        return self.loader(JitteredWindows(self.splits["train"], self.hparams.context_len, self.hparams.jitter), True)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation("test")

    def predict_dataloader(self) -> DataLoader:
        given = self.hparams.prompts
        if not given:
            raise LitlabError('nothing to predict: pass --data.prompts \'["It was", "Jane"]\'')
        # one prompt per batch: prompts differ in length, and generation needs no padding then
        items = [{"x": self.vocab.encode(t).unsqueeze(0), "prompt": [p]} for t, p in zip(self.prompts, given)]
        return DataLoader(items, batch_size=None)
