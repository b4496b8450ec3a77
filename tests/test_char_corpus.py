"""Text for the character models: Gutenberg stripping, the notebook's cleaning, a vocabulary from the training text,
contiguous splits without leakage, and windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import datamodules.downloads
from datamodules.char_corpus import CharVocab
from datamodules.char_windows import JitteredWindows, StreamSampler, TextStreams, contiguous_splits, tiled_windows
from datamodules.data_module import keep_batch
from datamodules.texts import clean_text, corpus_files, fetch_corpus, read_corpus, strip_gutenberg
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
    vocab = CharVocab(CharVocab.from_text("abca ."))
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


def read_streams(streams: TextStreams, world: int, epoch: int = 0) -> list[list[dict]]:
    """Each rank's batches of one epoch, as the DataLoader gives them."""
    ranks = []
    for rank in range(world):
        sampler = StreamSampler(streams, world, rank, seed=0)
        sampler.set_epoch(epoch)
        ranks.append(
            list(DataLoader(streams, batch_size=streams.rows // world, sampler=sampler, collate_fn=keep_batch))
        )
    return ranks


@pytest.mark.parametrize("world", [1, 2])
def test_stream_batches_continue_each_row_on_every_rank(world):
    streams = TextStreams(torch.arange(1000), context_len=64, rows=3 * world)  # batches of 3 rows per rank
    row_len = 999 // (3 * world)
    per_rank = []
    for batches in read_streams(streams, world):
        assert len(batches) == streams.steps == -(-row_len // 64)
        assert [b["continues"] for b in batches] == [False] + [True] * (len(batches) - 1)
        for before, after in zip(batches, batches[1:]):
            assert torch.equal(after["x"][:, 0], before["y"][:, -1])  # each row goes on where it stopped
        assert batches[-1]["x"].size(1) == row_len - 64 * (len(batches) - 1)  # a shorter last window
        rows = torch.cat([b["y"] for b in batches], dim=1)  # (3, row_len): the rank's rows, read whole
        assert torch.equal(rows, rows[:, :1] + torch.arange(row_len))
        per_rank.append(rows)
    targets = torch.cat(per_rank).flatten().sort().values
    assert torch.equal(targets, torch.arange(1, 1 + 3 * world * row_len))  # every target once, over all ranks
    with pytest.raises(LitlabError, match="in order"):
        streams.__getitems__([0, 3 * world + 1])  # rows of two different steps
    with pytest.raises(LitlabError, match="lower the batch size"):
        TextStreams(torch.arange(10), context_len=4, rows=16)


def test_training_streams_shift_their_windows_each_epoch_alike_on_every_rank():
    streams = TextStreams(torch.arange(1000), context_len=64, rows=4, shift=True)
    firsts = []
    for epoch in range(4):
        ranks = read_streams(streams, world=2, epoch=epoch)
        starts = torch.cat([batches[0]["x"][:, 0] for batches in ranks])  # rows 0, 2 | 1, 3
        shift = int(starts[0])
        assert 0 <= shift < 64 and torch.equal(starts.sort().values, shift + torch.arange(4) * streams.row_len)
        for batches in ranks:
            assert all(torch.equal(a["x"][:, 0], b["y"][:, -1]) for b, a in zip(batches, batches[1:]))
            assert int(batches[-1]["y"].max()) <= 999  # the shifted rows stay inside the split
        firsts.append(shift)
    assert len(set(firsts)) > 1  # the windows' boundaries move between epochs
    assert (
        read_streams(streams, 2, epoch=1)[1][0]["x"].tolist() == read_streams(streams, 2, epoch=1)[1][0]["x"].tolist()
    )


def test_corpus_files_are_local_files_or_where_urls_land(tmp_path):
    local = [tmp_path / "novel.txt"]
    assert corpus_files(local, ["https://example.org/ignored.txt"], tmp_path) == local
    urls = ["https://example.org/files/1260-0.txt?download=1", "https://example.org/b/other.txt"]
    assert corpus_files(None, urls, tmp_path / "d") == [tmp_path / "d" / "1260-0.txt", tmp_path / "d" / "other.txt"]
    assert corpus_files(None, None, tmp_path) == [tmp_path / "pg1260.txt"]  # Jane Eyre by default


def test_two_urls_with_one_file_name_are_both_read_and_a_web_page_or_folder_is_one_line(tmp_path, monkeypatch):
    served = {"https://a.org/book.txt": "First book.", "https://b.org/files/book.txt": "Second book."}

    def fetch(url, root, filename, md5=None):  # the network, served from here
        (Path(root) / filename).write_text(served[url], encoding="utf-8")

    monkeypatch.setattr(datamodules.downloads, "download_url", fetch)
    urls = list(served)
    fetch_corpus(None, urls, tmp_path / "data")
    files = corpus_files(None, urls, tmp_path / "data")
    assert files[0].name == "book.txt" and files[1].name.startswith("book-") and len(set(files)) == 2
    assert read_corpus(files) == "First book.\nSecond book."

    page = tmp_path / "page.txt"
    page.write_text("<!DOCTYPE html>\n<html><body>Jane Eyre</body></html>", encoding="utf-8")
    with pytest.raises(LitlabError, match="is a web page \\(HTML\\), not plain text"):
        read_corpus([page])
    with pytest.raises(LitlabError, match="names no file"):
        corpus_files(None, ["https://www.gutenberg.org/ebooks/"], tmp_path)
