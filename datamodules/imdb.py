"""IMDB movie reviews (Maas et al. 2011, `aclImdb_v1`) for sentiment classification (notebook 15.8.3 and 15.9.8).

The standard split: the 25k training reviews (`val_size` of them drawn with a seeded generator for validation: random
reviews, or with `val_split: movies` whole runs of consecutive ids, so that, as in test, their movies are unseen) and
the 25k test reviews. `split: notebook` pools all 50k and re-splits 45k/5k as the notebook did. Labels: `binary` (the
folder, neg/pos) or `rating8` (the score in the file name `<id>_<score>.txt`, 1-4 and 7-10, as 8 classes).

Reviews are tokenised once per process, held as one flat tensor per split and padded per batch to the batch's longest
review, with batches of similar lengths (`datamodules.text_batches`). Two tokenisers:

- `tokenizer: words`: lower case, `<br />` removed, a regex for words (and `!`, `?`); the vocabulary is the
  `vocab_size` most frequent training words (never val/test), id 0 padding, 1 unknown. It travels in the checkpoint
  (`state_dict`), so test/predict from a checkpoint read it back;
- any other value: a Hugging Face tokenizer name or folder (`AutoTokenizer`), fetched in `prepare_data`.

    litlab fit --config configs/imdb_bilstm.yaml --data.data_dir ~/data    # where aclImdb/ is (downloaded if absent)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.in_memory import trains_on_gpu
from datamodules.text_batches import Ragged, Sequences, length_batched_loader, read_predict_file
from litlab.errors import LitlabError
from litlab.hf_models import load_tokenizer

ACL_IMDB = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACL_IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
RATINGS = (1, 2, 3, 4, 7, 8, 9, 10)  # rating8 class i is the score RATINGS[i]; 5 and 6 are not in the dataset
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
_FILE = re.compile(r"^(\d+)_(\d+)\.txt$")
MOVIE_RUN = 250  # ids per run of `val_split: movies`: aclImdb numbers one movie's reviews consecutively in a folder


def words(text: str) -> list[str]:
    """The word tokeniser: lower case, HTML line breaks removed, words (with an apostrophe's suffix) and `!`/`?`."""
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


class WordVocab:
    """Words <-> ids: 0 is padding, 1 any word outside the vocabulary, 2.. the words, most frequent first."""

    PAD, UNKNOWN = 0, 1

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.ids = {word: i + 2 for i, word in enumerate(words)}

    @classmethod
    def build(cls, tokenised: list[list[str]], size: int, min_count: int = 1) -> WordVocab:
        counts = Counter(chain.from_iterable(tokenised))
        return cls([word for word, count in counts.most_common(size) if count >= min_count])

    def __len__(self) -> int:
        return len(self.words) + 2

    def encode(self, tokens: list[str]) -> list[int]:
        get = self.ids.get
        return [get(token, self.UNKNOWN) for token in tokens]


def read_reviews(folder: Path, labels: str) -> tuple[list[str], Tensor, Tensor]:
    """Texts, labels and movie runs of `<folder>/{neg,pos}/<id>_<score>.txt` (sorted by file name, so the order is
    fixed). A review's run is (its folder: 0 neg, 1 pos; its block of `MOVIE_RUN` consecutive ids there): the reviews
    of one movie in a folder share a run, but for the movies cut by a run's ends."""
    texts, targets, runs = [], [], []
    for polarity, name in enumerate(("neg", "pos")):
        for file in sorted((folder / name).glob("*.txt")):
            match = _FILE.match(file.name)
            if not match or int(match.group(2)) not in RATINGS:
                raise LitlabError(f"{file}: not an aclImdb review file name (<id>_<score>.txt, score 1-4 or 7-10)")
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            targets.append(polarity if labels == "binary" else RATINGS.index(int(match.group(2))))
            runs.append((polarity, int(match.group(1)) // MOVIE_RUN))
    return texts, torch.tensor(targets, dtype=torch.long), torch.tensor(runs, dtype=torch.long).reshape(-1, 2)


class ImdbData(L.LightningDataModule):
    """IMDB reviews as padded token batches `{"ids", "lengths", "index", "y"}`, with the reviews' `text` in validation
    and test batches and the inputs' `name` in predict batches. What a model may read (`Experiment.from_data`):
    `classes`, `num_classes`, `vocab_size`, `pad_id`, `unknown_id` (word dropout's id), `words_vocab` (the word
    vocabulary, for GloVe vectors).

    Args:
        data_dir: a folder holding `aclImdb/` (or the `aclImdb` folder itself); the archive is extracted there.
        download: fetch and extract the archive in `prepare_data` when the folder is missing.
        split: "standard" (25k train / 25k test) or "notebook" (all 50k pooled, 90 % = 45k train / 5k test).
        labels: "binary" (neg/pos) or "rating8" (the eight scores as classes).
        val_size: training reviews held out for validation (seeded).
        val_split: how they are drawn: "random" reviews (their movies' other reviews train, so val/acc reads about a
            point above test, whose movies are all unseen), or "movies": whole runs of consecutive ids, as many
            negative as positive, mostly other movies than the training reviews' (standard split only).
        seed: the generator of the val (and notebook) split.
        tokenizer: "words", or a Hugging Face tokenizer name/folder (e.g. "distilbert-base-uncased").
        vocab_size, min_count: the word vocabulary's size and a word's minimum count in the training reviews.
        max_len: tokens kept per review (its beginning).
        batch_size, eval_batch_size: batch sizes per device (eval default: twice batch_size; no gradients).
        bucket: batch reviews of similar length (False: plain random batches, for comparison).
        pad_to_multiple: a batch's length is rounded up to a multiple of this (tensor-core shapes on GPUs).
        num_workers: loader processes (0: batches are gathered from in-memory tensors in the main process).
        predict_texts, predict_files: reviews to classify with `litlab predict` (strings, or UTF-8 text files).
    """

    def __init__(
        self,
        data_dir: Path = Path("data"),
        download: bool = True,
        split: Literal["standard", "notebook"] = "standard",
        labels: Literal["binary", "rating8"] = "binary",
        val_size: PositiveInt = 2500,
        val_split: Literal["random", "movies"] = "random",
        seed: int = 42,
        tokenizer: str = "words",
        vocab_size: PositiveInt = 20000,
        min_count: PositiveInt = 1,
        max_len: PositiveInt = 512,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        bucket: bool = True,
        pad_to_multiple: PositiveInt = 8,
        num_workers: NonNegativeInt = 0,
        predict_texts: list[str] | None = None,
        predict_files: list[Path] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.vocab: WordVocab | None = None
        self._train_words: list[list[str]] | None = None
        self.texts: dict[str, list[str]] = {}
        self.targets: dict[str, Tensor] = {}
        self.datasets: dict[str, Sequences] = {}
        self._hf_tokenizer = None

    # ----- what the models need to know
    @property
    def classes(self) -> tuple[str, ...]:
        return ("negative", "positive") if self.hparams.labels == "binary" else tuple(map(str, RATINGS))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def words_vocab(self) -> WordVocab:
        if self.vocab is None:
            raise LitlabError("the word vocabulary is built by `fit` and stored in its checkpoint: pass --ckpt_path")
        return self.vocab

    @property
    def vocab_size(self) -> int:
        return len(self.words_vocab) if self.hparams.tokenizer == "words" else len(self.hf_tokenizer)

    @property
    def pad_id(self) -> int:
        return WordVocab.PAD if self.hparams.tokenizer == "words" else self.hf_tokenizer.pad_token_id

    @property
    def unknown_id(self) -> int:
        unknown = WordVocab.UNKNOWN if self.hparams.tokenizer == "words" else self.hf_tokenizer.unk_token_id
        if unknown is None:
            raise LitlabError(f"{self.hparams.tokenizer} has no unknown token for --model.init_args.word_dropout")
        return unknown

    @property
    def hf_tokenizer(self):
        if self._hf_tokenizer is None:
            self._hf_tokenizer = load_tokenizer(self.hparams.tokenizer)
        return self._hf_tokenizer

    # ----- data on disk
    @property
    def root(self) -> Path:
        folder = Path(self.hparams.data_dir).expanduser()
        return folder if (folder / "train").is_dir() and (folder / "test").is_dir() else folder / "aclImdb"

    def _missing(self) -> bool:
        return not all((self.root / split / label).is_dir() for split in ("train", "test") for label in ("neg", "pos"))

    def prepare_data(self) -> None:
        if self.hparams.tokenizer != "words":
            load_tokenizer(self.hparams.tokenizer)  # rank 0 fills the Hugging Face cache
        if not self._missing() or not self.hparams.download:
            return
        from torchvision.datasets.utils import download_and_extract_archive

        folder = Path(self.hparams.data_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as unpacked:  # a whole aclImdb/ appears, or none
            try:
                download_and_extract_archive(ACL_IMDB, folder, unpacked, md5=ACL_IMDB_MD5)
            except (OSError, RuntimeError) as err:
                raise LitlabError(
                    f"could not download IMDB into {folder} ({str(err)[:120]}): check the connection, or extract "
                    f"{ACL_IMDB} and pass --data.data_dir"
                ) from None
            shutil.move(Path(unpacked) / "aclImdb", folder / "aclImdb")

    def _read(self) -> None:
        if self._missing():
            raise LitlabError(
                f"no IMDB reviews in {self.root} (looked for train/ and test/ with neg/ and pos/): pass "
                f"--data.download=true, or --data.data_dir to the folder of an extracted {ACL_IMDB}"
            )
        labels = self.hparams.labels
        train, train_y, runs = read_reviews(self.root / "train", labels)
        test, test_y, _ = read_reviews(self.root / "test", labels)
        generator = torch.Generator().manual_seed(self.hparams.seed)
        if self.hparams.split == "notebook":  # 45k/5k of the pooled 50k
            if self.hparams.val_split == "movies":
                raise LitlabError("--data.val_split=movies needs --data.split=standard (the notebook's is random)")
            pooled, pooled_y = train + test, torch.cat([train_y, test_y])
            order = torch.randperm(len(pooled), generator=generator)
            cut = len(pooled) * 9 // 10
            train, train_y = [pooled[i] for i in order[:cut]], pooled_y[order[:cut]]
            test, test_y = [pooled[i] for i in order[cut:]], pooled_y[order[cut:]]
        if not 0 < self.hparams.val_size < len(train):
            raise LitlabError(f"--data.val_size={self.hparams.val_size}: must be between 1 and {len(train) - 1}")
        if self.hparams.val_split == "movies":  # runs in a random order, neg and pos in turn, a run's reviews together
            folder, block = runs.unbind(1)
            rank = torch.rand(2, int(block.max()) + 1, generator=generator).argsort(1).argsort(1)
            order = (rank[folder, block] * 2 + folder).argsort(stable=True).tolist()
        else:
            order = torch.randperm(len(train), generator=generator).tolist()
        val_ids, train_ids = order[: self.hparams.val_size], order[self.hparams.val_size :]
        self.texts = {"train": [train[i] for i in train_ids], "val": [train[i] for i in val_ids], "test": test}
        self.targets = {"train": train_y[train_ids], "val": train_y[val_ids], "test": test_y}

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.texts:  # read once per process
            return
        self._read()
        if self.hparams.tokenizer == "words" and self.vocab is None:  # from the training reviews only
            self._train_words = [words(text) for text in self.texts["train"]]  # encoded from these, not re-split
            self.vocab = WordVocab.build(self._train_words, self.hparams.vocab_size, self.hparams.min_count)

    # ----- the vocabulary travels with the checkpoint
    def state_dict(self) -> dict:
        return {"vocab": self.vocab.words} if self.vocab is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "vocab" in state:
            self.vocab = WordVocab(list(state["vocab"]))

    # ----- tokens
    def encode(self, texts: list[str], tokenised: list[list[str]] | None = None) -> tuple[Tensor, Tensor]:
        """(all tokens back to back, per-text lengths), each text cut to `max_len` tokens; `tokenised`: the texts
        already split into words."""
        cut = self.hparams.max_len
        if self.hparams.tokenizer == "words":
            vocab = self.words_vocab
            encoded = [vocab.encode(tokens[:cut]) for tokens in tokenised or map(words, texts)]
        else:  # never past the model's position table, which the tokenizer records (512 for BERT and DistilBERT)
            cut = min(cut, self.hf_tokenizer.model_max_length)
            encoded = self.hf_tokenizer(texts, truncation=True, max_length=cut)["input_ids"]
        ragged = Ragged.from_lists(encoded)
        return ragged.tokens, ragged.lengths

    def _dataset(self, split: str) -> Sequences:
        if split not in self.datasets:  # tokenised once, after the vocabulary is known (fit or checkpoint)
            tokenised = self._train_words if split == "train" else None  # split into words once, for the vocabulary
            tokens, lengths = self.encode(self.texts[split], tokenised)
            if split == "train":
                self._train_words = None
            texts = {} if split == "train" else {"text": self.texts[split]}  # what evaluation may show
            self.datasets[split] = Sequences(
                tokens, lengths, self.pad_id, self.hparams.pad_to_multiple, y=self.targets[split], **texts
            )
        return self.datasets[split]

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset, hp = self._dataset(split), self.hparams
        batch_size = hp.batch_size if train else hp.eval_batch_size or 2 * hp.batch_size
        on_gpu = trains_on_gpu(self.trainer)
        return length_batched_loader(dataset, dataset.lengths, batch_size, train, hp.num_workers, on_gpu, hp.bucket)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # ----- predict
    def predict_inputs(self) -> list[tuple[str, str]]:
        """(what the user gave: the text or the file name, the review text) per input."""
        inputs = [(text, text) for text in self.hparams.predict_texts or []]
        inputs += [(str(file), read_predict_file(file)) for file in self.hparams.predict_files or []]
        if not inputs:
            raise LitlabError(
                "nothing to predict: pass --data.predict_texts '[\"A great film.\"]' or --data.predict_files"
            )
        return inputs

    def predict_dataloader(self) -> DataLoader:
        items = self.predict_inputs()  # (the text or the file's name, the review)
        tokens, lengths = self.encode([text for _, text in items])
        for (given, text), length in zip(items, lengths.tolist()):
            if length == 0 or not text.strip():
                raise LitlabError(f"predict input {given[:60]!r} is empty (no words to classify)")
        names = [given for given, _ in items]  # what predictions are labelled with
        dataset = Sequences(tokens, lengths, self.pad_id, self.hparams.pad_to_multiple, name=names)
        return length_batched_loader(dataset, lengths, 32, train=False, bucket=False)
