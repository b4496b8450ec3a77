"""IMDB movie reviews (Maas et al. 2011, `aclImdb_v1`) for sentiment classification (notebook 15.8.3 and 15.9.8).

The standard split: the 25k training reviews (`val_size` of them drawn with a seeded generator for validation: random
reviews, or with `val_split: movies` whole runs of consecutive ids, so that, as in test, their movies are unseen) and
the 25k test reviews. `split: notebook` pools all 50k and re-splits 45k/5k as the notebook did. Labels: `binary` (the
folder, neg/pos) or `rating8` (the score in the file name `<id>_<score>.txt`, 1-4 and 7-10, as 8 classes). Reading
and splitting: `imdb_reviews`.

Reviews are tokenised once per process, held as one flat tensor per split and padded per batch to the batch's longest
review, with batches of similar lengths (`text_batches`). The tokenizer (`tokenizers`): `words`, whose vocabulary is
the `vocab_size` most frequent training words (never val/test), kept in the checkpoint; or any Hugging Face tokenizer
name or folder, fetched in `prepare_data`.

    litlab fit --config configs/imdb_bilstm.yaml --data.data_dir ~/data    # where aclImdb/ is (downloaded if absent)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.data_module import DataModule, Strings
from datamodules.downloads import download_and_extract
from datamodules.imdb_reviews import ACL_IMDB, ACL_IMDB_MD5, RATINGS, split_reviews
from datamodules.text_batches import Ragged, Sequences, length_batches
from datamodules.texts import read_predict_file
from datamodules.tokenizers import HubTokenizer, WordTokenizer, words
from litlab.errors import LitlabError


class ImdbData(DataModule):
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
        batch_size, eval_batch_size, num_workers: see `DataModule`.
        bucket: batch reviews of similar length (False: plain random batches, for comparison).
        pad_to_multiple: a batch's length is rounded up to a multiple of this (tensor-core shapes on GPUs).
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
        predict_texts: Strings | None = None,
        predict_files: Strings | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.texts: dict[str, list[str]] = {}
        self.targets: dict[str, Tensor] = {}
        self.datasets: dict[str, Sequences] = {}
        self._train_words: list[list[str]] | None = None
        self._tokenizer: WordTokenizer | HubTokenizer | None = None

    # ----- what the models need to know
    @property
    def classes(self) -> tuple[str, ...]:
        return ("negative", "positive") if self.hparams.labels == "binary" else tuple(map(str, RATINGS))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def tokenizer(self) -> WordTokenizer | HubTokenizer:
        """The word tokenizer of the training reviews' vocabulary (kept in checkpoints), or the Hugging Face one."""
        if self.hparams.tokenizer != "words":
            self._tokenizer = self._tokenizer or HubTokenizer(self.hparams.tokenizer)
        elif "vocab" not in self.learned:
            raise LitlabError("the word vocabulary is built by `fit` and stored in its checkpoint: pass --ckpt_path")
        elif self._tokenizer is None or self._tokenizer.words != self.learned["vocab"]:  # new, or a checkpoint's
            self._tokenizer = WordTokenizer(self.learned["vocab"])
        return self._tokenizer

    @property
    def words_vocab(self) -> WordTokenizer:
        """The word tokenizer (its `words`: what GloVe vectors are looked up by)."""
        if self.hparams.tokenizer != "words":
            raise LitlabError("pretrained word vectors (glove_path) need --data.tokenizer=words")
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def unknown_id(self) -> int:
        if (unknown := self.tokenizer.unknown_id) is None:
            raise LitlabError(f"{self.hparams.tokenizer} has no unknown token for --model.init_args.word_dropout")
        return unknown

    # ----- data on disk
    @property
    def root(self) -> Path:
        folder = Path(self.hparams.data_dir).expanduser()
        return folder if (folder / "train").is_dir() and (folder / "test").is_dir() else folder / "aclImdb"

    def _missing(self) -> bool:
        return not all((self.root / split / label).is_dir() for split in ("train", "test") for label in ("neg", "pos"))

    def prepare_data(self) -> None:
        if self.hparams.tokenizer != "words":
            HubTokenizer(self.hparams.tokenizer)  # rank 0 fills the Hugging Face cache
        if self._missing() and self.hparams.download:
            instead = f": check the connection, or extract {ACL_IMDB} and pass --data.data_dir"
            download_and_extract(ACL_IMDB, Path(self.hparams.data_dir), "aclImdb", md5=ACL_IMDB_MD5, instead=instead)

    def setup(self, stage: str) -> None:
        wanted = ("test",) if stage == "test" else ("train", "val")
        if stage == "predict" or all(split in self.texts for split in wanted):  # read once per process
            return
        if self._missing():
            raise LitlabError(
                f"no IMDB reviews in {self.root} (looked for train/ and test/ with neg/ and pos/): pass "
                f"--data.download=true, or --data.data_dir to the folder of an extracted {ACL_IMDB}"
            )
        hp = self.hparams
        texts, targets = split_reviews(self.root, hp.labels, hp.split, hp.val_split, hp.val_size, hp.seed, stage)
        self.texts, self.targets = self.texts | texts, self.targets | targets
        if hp.tokenizer == "words" and "vocab" not in self.learned and "train" in texts:  # the training reviews only
            self._train_words = [words(text) for text in self.texts["train"]]  # encoded from these, not re-split
            self.learned["vocab"] = WordTokenizer.build(self._train_words, hp.vocab_size, hp.min_count).words

    # ----- tokens
    def encode(self, texts: list[str], tokenised: list[list[str]] | None = None) -> Ragged:
        """All tokens back to back with per-text lengths, each text cut to `max_len` tokens."""
        return Ragged.from_lists(self.tokenizer.encode(texts, self.hparams.max_len, tokenised))

    def _dataset(self, split: str) -> Sequences:
        if split not in self.datasets:  # tokenised once, after the vocabulary is known (fit or checkpoint)
            tokenised, self._train_words = (self._train_words, None) if split == "train" else (None, self._train_words)
            texts = {} if split == "train" else {"text": self.texts[split]}  # what evaluation may show
            self.datasets[split] = Sequences(
                self.encode(self.texts[split], tokenised), self.pad_id, self.hparams.pad_to_multiple,
                y=self.targets[split], **texts,
            )  # fmt: skip
        return self.datasets[split]

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset, size = self._dataset(split), self.batch_size if train else self.eval_batch_size
        return self.loader(dataset, train, batch_sampler=length_batches(dataset, size, train, self.hparams.bucket))

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
        tokens = self.encode([text for _, text in items])
        for (given, text), length in zip(items, tokens.lengths.tolist()):
            if length == 0 or not text.strip():
                raise LitlabError(f"predict input {given[:60]!r} is empty (no words to classify)")
        names = [given for given, _ in items]  # what predictions are labelled with
        dataset = Sequences(tokens, self.pad_id, self.hparams.pad_to_multiple, name=names)
        return self.loader(dataset, batch_sampler=length_batches(dataset, self.eval_batch_size, False, bucket=False))
