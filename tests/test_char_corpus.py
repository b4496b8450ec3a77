"""Text for the character models: Gutenberg stripping, the notebook's cleaning, a vocabulary from the training text,
contiguous splits without leakage, and windows."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.char_corpus import (
    CharVocab,
    JitteredWindows,
    clean_text,
    contiguous_splits,
    corpus_files,
    read_corpus,
    strip_gutenberg,
    tiled_windows,
)
from datamodules.in_memory import keep_batch
from litlab.errors import LitlabError

GUTENBERG = """The Project Gutenberg eBook of Jane Eyre: An Autobiography
This ebook is for the use of anyone anywhere.
*** START OF THE PROJECT GUTENBERG EBOOK JANE EYRE: AN AUTOBIOGRAPHY ***
CHAPTER I
There was no possibility of taking a walk that day.
*** END OF THE PROJECT GUTENBERG EBOOK JANE EYRE: AN AUTOBIOGRAPHY ***
Updated editions will replace the previous one.
"""


def test_gutenberg_header_and_footer_are_stripped(tmp_path):
    assert strip_gutenberg(GUTENBERG) == "CHAPTER I\nThere was no possibility of taking a walk that day."
    assert strip_gutenberg("no markers here") == "no markers here"
    (tmp_path / "book.txt").write_text("\ufeff" + GUTENBERG, encoding="utf-8")  # with a byte-order mark
    assert read_corpus([tmp_path / "book.txt"]).startswith("CHAPTER I")


def test_cleaning_keeps_the_notebooks_alphabet():
    assert clean_text("“Well!”  she said—\n\tdid   you 2 go, Jane?") == "Well she said did you 2 go, Jane?"


def test_vocabulary_round_trip_and_unknown_characters():
    vocab = CharVocab.from_text("abca .")
    assert len(vocab) == 5 + 1 and vocab.chars == " .abc"
    ids = vocab.encode("cab.")
    assert vocab.decode(ids) == "cab." and (ids > 0).all()
    assert vocab.encode("aé😀").tolist() == [vocab.encode("a").item(), CharVocab.UNKNOWN, CharVocab.UNKNOWN]
    assert CharVocab(vocab.chars).encode("cab.").tolist() == ids.tolist()  # rebuilt from its characters


def test_splits_are_contiguous_and_disjoint():
    ids = torch.arange(1000)
    splits = contiguous_splits(ids, 0.9)
    assert [len(s) for s in splits.values()] == [900, 50, 50]
    assert torch.equal(torch.cat(list(splits.values())), ids)
    assert splits["train"].max() < splits["val"].min() and splits["val"].max() < splits["test"].min()
    with pytest.raises(LitlabError, match="between 0 and 1"):
        contiguous_splits(ids, 1.0)


def test_training_windows_are_jittered_targets_shifted_and_sharded():
    ids = torch.arange(990)
    windows = JitteredWindows(ids, context_len=9)  # stretches of 10, the last one kept for the jitter
    assert len(windows) == 98
    batch = windows.__getitems__([0, 5, 97])
    assert batch["x"].shape == (3, 9) and torch.equal(batch["y"][:, :-1], batch["x"][:, 1:])  # next character
    starts = batch["x"][:, 0]
    assert ((starts >= torch.tensor([0, 50, 970])) & (starts < torch.tensor([10, 60, 980]))).all()
    shards = [
        torch.cat([b["x"][:, 0] // 10 for b in DataLoader(windows, batch_size=8, collate_fn=keep_batch,
                   sampler=DistributedSampler(windows, num_replicas=2, rank=r, shuffle=True, seed=0))])
        for r in (0, 1)
    ]  # fmt: skip
    assert not set(shards[0].tolist()) & set(shards[1].tolist())  # each rank its own stretches
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(98))


def test_evaluation_windows_tile_the_split():
    windows = tiled_windows(torch.arange(101), context_len=10)
    assert windows.shape == (10, 11)
    targets = windows[:, 1:].flatten()
    assert torch.equal(targets, torch.arange(1, 101))  # every character after the first is a target once
    with pytest.raises(LitlabError, match="no window"):
        tiled_windows(torch.arange(5), context_len=10)


def test_corpus_files_are_local_files_or_where_urls_land(tmp_path):
    local = [tmp_path / "novel.txt"]
    assert corpus_files(local, ["https://example.org/ignored.txt"], tmp_path) == local
    urls = ["https://example.org/files/1260-0.txt?download=1", "https://example.org/b/other.txt"]
    assert corpus_files(None, urls, tmp_path / "d") == [tmp_path / "d" / "1260-0.txt", tmp_path / "d" / "other.txt"]
    assert corpus_files(None, None, tmp_path) == [tmp_path / "pg1260.txt"]  # Jane Eyre by default
