"""Characters of a novel for next-character language models (notebook 15.8.2 and 15.9.9).

The text comes from local files (`text_files`) or URLs (`urls`, downloaded into `data_dir` in `prepare_data`); the
default is Project Gutenberg's plain-text *Jane Eyre* (ebook 1260), whose licence header and footer are stripped.
`clean` keeps the notebook's alphabet (letters, digits, `,.?`, single spaces), so results compare with it.

The text is encoded once into one integer tensor and split contiguously: the first `train_fraction` trains, the rest is
halved into val and test, so no window crosses a split boundary and no test character was seen in training. The
vocabulary comes from the training text (id 0: a character unseen there). Training windows of `context_len`
characters start at random positions (one per `context_len` characters per epoch, every position a target);
val/test windows tile their split. With `streams`, each split is instead cut into as many rows as a batch holds (times
the ranks) and consecutive batches continue each row (PyTorch's word_language_model example), so a recurrent model
carries its state from batch to batch: truncated backpropagation through time, every character read with all the text
before it in its row.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.in_memory import TensorColumns, batch_loader, trains_on_gpu
from litlab.errors import LitlabError

JANE_EYRE = "https://www.gutenberg.org/cache/epub/1260/pg1260.txt"
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's `*** START OF ... ***` and `*** END OF ... ***` lines (all of it when the
    markers are absent)."""
    start, end = _START.search(text), _END.search(text)
    return text[start.end() if start else 0 : end.start() if end else len(text)].strip()


def clean_text(text: str) -> str:
    """The notebook's cleaning: letters, digits and `,.?` kept, everything else a space, runs of spaces collapsed."""
    return re.sub(r" +", " ", re.sub(r"[^A-Za-z0-9,.? ]", " ", text)).strip()


class CharVocab:
    """Characters <-> ids; id 0 stands for any character the training text did not contain."""

    UNKNOWN = 0

    def __init__(self, chars: str) -> None:
        self.chars = chars  # id i+1 is chars[i]
        self._table = torch.zeros(max(map(ord, chars), default=0) + 1, dtype=torch.long)
        self._table[torch.tensor([ord(c) for c in chars], dtype=torch.long)] = torch.arange(1, len(chars) + 1)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> Tensor:
        """(len(text),) ids, one vectorised lookup."""
        codes = torch.from_numpy(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64))
        known = codes < len(self._table)
        return torch.where(known, self._table[codes.clamp(max=len(self._table) - 1)], self.UNKNOWN)

    def decode(self, ids: Tensor | list[int], unknown: str = "\ufffd") -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else unknown for i in list(map(int, ids)))


def read_corpus(files: list[Path]) -> str:
    texts = []
    for file in files:
        if not file.is_file():
            raise LitlabError(f"text file {file} not found: pass --data.text_files with existing files")
        try:
            texts.append(strip_gutenberg(file.read_text(encoding="utf-8-sig")))
        except UnicodeDecodeError as err:
            raise LitlabError(f"text file {file} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    return "\n".join(texts)


def corpus_files(text_files: list[Path] | None, urls: list[str] | None, data_dir: Path) -> list[Path]:
    """The files a corpus is read from: `text_files` when given, otherwise where `urls` (default: Jane Eyre) are
    downloaded under `data_dir`."""
    if text_files:
        return [Path(f) for f in text_files]
    return [downloaded_file(url, Path(data_dir)) for url in urls or [JANE_EYRE]]


def downloaded_file(url: str, folder: Path) -> Path:
    """Where `download` puts `url`: its path's last part (no query) under `folder`."""
    return folder / Path(urllib.parse.urlparse(url).path).name


def fetch_corpus(text_files: list[Path] | None, urls: list[str] | None, data_dir: Path) -> None:
    """Download `urls` (default: Jane Eyre) into `data_dir` unless local `text_files` are given (rank 0,
    `prepare_data`)."""
    if not text_files:
        for url in urls or [JANE_EYRE]:
            download(url, Path(data_dir))


def download(url: str, folder: Path) -> Path:
    """The file of `url` under `folder` (fetched once, written atomically)."""
    target = downloaded_file(url, folder)
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            partial.write_bytes(response.read())
    except OSError as err:
        raise LitlabError(
            f"could not download {url} into {folder} ({err}): check the connection, or pass --data.text_files"
        ) from None
    partial.replace(target)
    return target


def contiguous_splits(ids: Tensor, train_fraction: float) -> dict[str, Tensor]:
    """First `train_fraction` for train, the rest halved into val and test (in that order)."""
    if not 0 < train_fraction < 1:
        raise LitlabError(f"--data.train_fraction={train_fraction}: must be between 0 and 1")
    n = len(ids)
    train_end = int(n * train_fraction)
    val_end = train_end + (n - train_end) // 2
    return {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}


class JitteredWindows(Dataset):
    """Training windows: item i is `context_len + 1` characters starting at a random point of the i-th stretch of that
    length, drawn afresh at every access (torch's RNG, so seeded runs repeat). Any sampler works, and under DDP each
    rank reads its own stretches."""

    def __init__(self, ids: Tensor, context_len: int, jitter: bool = True) -> None:
        self.ids, self.width, self.jitter = ids, context_len + 1, jitter
        self.count = (len(ids) - self.width) // self.width
        if self.count < 1:
            raise LitlabError(f"a split of {len(ids)} characters holds no two windows of {self.width}")

    def __len__(self) -> int:
        return self.count

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        stretch = torch.as_tensor(indices) * self.width  # (B,)
        starts = stretch + torch.randint(0, self.width, (len(indices),)) if self.jitter else stretch
        windows = self.ids[starts.unsqueeze(1) + torch.arange(self.width)]  # (B, context_len + 1)
        return {"x": windows[:, :-1], "y": windows[:, 1:]}


class TextStreams(Dataset):
    """A split read as `rows` parallel streams: row r is the r-th of `rows` equal stretches, read `context_len`
    characters at a time (the last window of a row may be shorter). Item `step * rows + r` is row r's window at `step`,
    so batches of `rows` items in order are the rows' consecutive windows; `StreamSampler` gives each rank its share
    of every batch. With `shift`, the rows start up to `context_len - 1` characters later, by a shift the sampler
    draws per epoch and passes in the indices (item `shift * len(self) + i`), so workers need no shared state and
    window boundaries move from epoch to epoch. A batch says whether its rows continue the previous batch's
    (`continues`: step > 0)."""

    def __init__(self, ids: Tensor, context_len: int, rows: int, shift: bool = False) -> None:
        self.ids, self.context_len, self.rows, self.shift = ids, context_len, rows, shift
        self.row_len = (len(ids) - 1 - (context_len - 1 if shift else 0)) // rows  # characters each row predicts
        if self.row_len < 1:
            raise LitlabError(f"a split of {len(ids)} characters cannot be read as {rows} rows: lower the batch size")
        self.steps = -(-self.row_len // context_len)

    def __len__(self) -> int:
        return self.steps * self.rows

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor | bool]:
        given = torch.as_tensor(indices)  # (B,)
        shift, index = given // len(self), given % len(self)
        step = int(index[0]) // self.rows
        if bool((index // self.rows != step).any()) or bool((shift != shift[0]).any()):
            raise LitlabError("stream batches must be read in order: a stream loader cannot be shuffled")
        width = min(self.context_len, self.row_len - step * self.context_len)
        starts = shift + (index % self.rows) * self.row_len + step * self.context_len  # (B,)
        windows = self.ids[starts.unsqueeze(1) + torch.arange(width + 1)]  # (B, width + 1)
        return {"x": windows[:, :-1], "y": windows[:, 1:], "continues": step > 0}


class StreamSampler(DistributedSampler):
    """`TextStreams` in reading order, rank k of `world` taking the rows k, k + world, ... of each step; with the
    dataset's `shift`, one shift per epoch drawn from `seed` and the epoch (the same on every rank). A
    DistributedSampler, so Lightning keeps it instead of injecting its own, which would shuffle the training rows."""

    def __init__(self, streams: TextStreams, world: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(streams, num_replicas=world, rank=rank, shuffle=False, seed=seed)

    def __iter__(self):
        streams = self.dataset
        shift = 0
        if streams.shift:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            shift = int(torch.randint(streams.context_len, (), generator=generator))
        order = torch.arange(self.rank, len(streams), self.num_replicas)  # (steps x rows / world,)
        return iter((order + shift * len(streams)).tolist())


def tiled_windows(ids: Tensor, context_len: int) -> Tensor:
    """(N, context_len + 1) consecutive windows that tile the split (each shares its last character with the next's
    first, so every character after the first is a target exactly once)."""
    count = (len(ids) - 1) // context_len
    if count < 1:
        raise LitlabError(f"a split of {len(ids)} characters holds no window of {context_len + 1}")
    starts = torch.arange(count) * context_len
    return ids[starts.unsqueeze(1) + torch.arange(context_len + 1)]


class CharCorpusData(L.LightningDataModule):
    """A text as next-character windows.

    Args:
        text_files: local UTF-8 text files (Project Gutenberg headers are stripped); when given, `urls` is ignored.
        urls: texts to download into `data_dir` in `prepare_data` (default: Jane Eyre).
        data_dir: where downloads go.
        clean: the notebook's alphabet (letters, digits, `,.?`, single spaces); False keeps the raw text.
        context_len: characters a model sees per window.
        train_fraction: leading share of the text used for training; the rest is halved into val and test.
        vocab: the vocabulary's characters; by default built from the training text by `fit` and stored in the
            checkpoint (`state_dict`), so `predict` needs no text at all.
        jitter: training windows start at a random point of their stretch (False: fixed windows, e.g. to memorise).
        streams: every split read as `batch_size` (eval: `eval_batch_size`) rows per rank side by side, each batch
            continuing the last (`TextStreams`; the training rows start at a random shift each epoch): recurrent
            models carry their state across batches in training and evaluation. False: independent windows from a
            zero state (shuffled and jittered in training).
        prompts: texts to continue with `litlab predict` (an empty prompt starts from a space).
        batch_size, eval_batch_size, num_workers: loader settings (eval default: batch_size).

    What a model may read (`Experiment.from_data`): `vocab` (encode/decode), `vocab_size`, `prompts`; a predict batch
    carries its prompt as given (`prompt`), a stream batch whether it continues the previous one (`continues`).
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
        prompts: list[str] | None = None,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.vocab = CharVocab(vocab) if vocab is not None else None
        self.text: str | None = None
        self._splits: dict[str, Tensor] = {}

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            raise LitlabError("the vocabulary is built by `fit` from the training text: pass --ckpt_path")
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
        if not self._splits:
            if self.text is None:
                raise LitlabError("no text read yet: the splits exist after setup('fit'|'validate'|'test')")
            self._splits = contiguous_splits(self.vocab.encode(self.text), self.hparams.train_fraction)
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
        if self.vocab is None:
            self.vocab = CharVocab.from_text(self.text[: int(len(self.text) * self.hparams.train_fraction)])

    # ----- the vocabulary travels with the checkpoint
    def state_dict(self) -> dict:
        return {"vocab": self.vocab.chars} if self.vocab is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "vocab" in state:
            self.vocab, self._splits = CharVocab(state["vocab"]), {}

    def _loader(self, dataset: Dataset, batch_size: int, **sampling) -> DataLoader:
        pin = trains_on_gpu(self.trainer)
        return batch_loader(dataset, self.hparams.num_workers, pin, batch_size=batch_size, **sampling)

    def _streams(self, split: str, batch_size: int) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        streams = TextStreams(self.splits[split], self.hparams.context_len, batch_size * world, split == "train")
        seed = int(os.getenv("PL_GLOBAL_SEED", 0))  # seed_everything's on every rank, as Lightning's samplers
        sampler = StreamSampler(streams, world, rank, seed)
        return self._loader(streams, batch_size, sampler=sampler)

    def _evaluation(self, split: str) -> DataLoader:
        """val/test: the split as streams, or as windows that tile it."""
        batch_size = self.hparams.eval_batch_size or self.hparams.batch_size
        if self.hparams.streams:
            return self._streams(split, batch_size)
        windows = tiled_windows(self.splits[split], self.hparams.context_len)
        return self._loader(TensorColumns({"x": windows[:, :-1], "y": windows[:, 1:]}), batch_size)

    def train_dataloader(self) -> DataLoader:
        if self.hparams.streams:
            return self._streams("train", self.hparams.batch_size)
        windows = JitteredWindows(self.splits["train"], self.hparams.context_len, self.hparams.jitter)
        return self._loader(windows, self.hparams.batch_size, shuffle=True)

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
